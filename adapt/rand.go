package adapt

import "math"

// The perturbations of MeZO and the initial values of adapters come from a
// counter-based generator: the value for (seed, tensor, element) is a pure
// function of the triple, so a perturbation is regenerated instead of
// stored and any element can be computed without the ones before it.

// mix is splitmix64's output function, a bijection on uint64 with good
// avalanche.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// stream derives the key of one tensor's values under seed.
func stream(seed uint64, tensor int) uint64 {
	return mix(mix(seed) ^ mix(uint64(tensor)+0x632be59bd9b4e019))
}

// gaussian returns the standard normal value of element i of the stream
// key (see stream). Elements 2j and 2j+1 are the two outputs of one
// Box–Muller transform of the uniforms drawn for j.
func gaussian(key uint64, i int) float32 {
	j := uint64(i) >> 1
	h1 := mix(key ^ (2 * j))
	h2 := mix(key ^ (2*j + 1))
	u1 := (float64(h1>>11) + 1) / (1 << 53) // (0, 1]: log is finite
	u2 := float64(h2>>11) / (1 << 53)       // [0, 1)
	r := math.Sqrt(-2 * math.Log(u1))
	if i&1 == 0 {
		return float32(r * math.Cos(2*math.Pi*u2))
	}
	return float32(r * math.Sin(2*math.Pi*u2))
}

// uniform returns a value in [0, 1) for counter i of key.
func uniform(key uint64, i uint64) float64 {
	return float64(mix(key^i)>>11) / (1 << 53)
}
