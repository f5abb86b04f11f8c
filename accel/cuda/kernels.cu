// Kernels of the CUDA backend, compiled at run time by NVRTC for the
// device's architecture. No headers: NVRTC compiles this file alone, and
// half conversions are one PTX instruction each.
//
// Weights keep their GGUF block layout on the device (see quant/dequant.go
// for each). Every type is read in units of 16 values: unit() returns them
// as two runs of eight at element positions p0 and p1 of the row, so one
// mat-vec, dequantize and embedding kernel serves every type.
//
// Quantized weights multiply activations rounded to the CPU backend's 8-bit
// grid (actq8a, actq8k), so that both backends compute the same products
// and their logits agree to float rounding.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;

#define NEG_INF __int_as_float(0xff800000)

// GGML type numbers, as in quant.Type.
#define T_F32 0
#define T_F16 1
#define T_Q4_1 3
#define T_Q5_0 6
#define T_Q5_1 7
#define T_Q4_K 12
#define T_Q5_K 13
#define T_Q6_K 14
#define T_BF16 30
// q4_0 and q8_0 repacked at load (see Backend.Load): a row's quants of all
// blocks first, 16-byte aligned (q4_0: 16 bytes a block, q8_0: 32), then
// its f16 scales, so that a unit is one 8- or 16-byte load.
#define T_Q4_0R 1002
#define T_Q8_0R 1008

__device__ __forceinline__ float h2f(u16 h) {
	float f;
	asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
	return f;
}

__device__ __forceinline__ u16 f2h(float f) {
	u16 h;
	asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
	return h;
}

// ld16 reads a little-endian u16 at a 2-byte aligned address.
__device__ __forceinline__ u16 ld16(const u8* p) { return *(const u16*)p; }

// scaleMinK4 is quant's scaleMinK4: the 6-bit scale and min of sub-block j
// of a q4_K or q5_K block.
__device__ __forceinline__ void scaleMinK4(int j, const u8* s, float* sc, float* m) {
	if (j < 4) {
		*sc = (float)(s[j] & 63);
		*m = (float)(s[j + 4] & 63);
	} else {
		*sc = (float)((s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4));
		*m = (float)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
	}
}

// unit decodes unit u (16 values) of a row of type T into w: w[0..7] are
// the row's elements p0..p0+7, w[8..15] elements p1..p1+7. Products that
// feed an addition are rounded separately (__fmul_rn) because the CPU does
// not fuse them.
template <int T>
__device__ __forceinline__ void unit(const u8* __restrict__ row, int ncols, int u, float* w, int* p0, int* p1);

template <>
__device__ __forceinline__ void unit<T_F32>(const u8* __restrict__ row, int ncols, int u, float* w, int* p0, int* p1) {
	const float* r = (const float*)row + 16 * u;
#pragma unroll
	for (int i = 0; i < 16; i++) w[i] = r[i];
	*p0 = 16 * u;
	*p1 = 16 * u + 8;
}

template <>
__device__ __forceinline__ void unit<T_F16>(const u8* __restrict__ row, int ncols, int u, float* w, int* p0, int* p1) {
	const u16* r = (const u16*)row + 16 * u;
#pragma unroll
	for (int i = 0; i < 16; i++) w[i] = h2f(r[i]);
	*p0 = 16 * u;
	*p1 = 16 * u + 8;
}

template <>
__device__ __forceinline__ void unit<T_BF16>(const u8* __restrict__ row, int ncols, int u, float* w, int* p0, int* p1) {
	const u16* r = (const u16*)row + 16 * u;
#pragma unroll
	for (int i = 0; i < 16; i++) w[i] = __uint_as_float((u32)r[i] << 16);
	*p0 = 16 * u;
	*p1 = 16 * u + 8;
}

// The 32-value types (q4_1, q5_0, q5_1; q4_0 and q8_0 are repacked, below):
// unit h of block b is bytes 8h..8h+7 of qs, whose low nibbles are elements
// 8h.. and high nibbles 16+8h..
template <>
__device__ __forceinline__ void unit<T_Q4_1>(const u8* __restrict__ row, int ncols, int u, float* w, int* p0, int* p1) {
	int b = u >> 1, h = u & 1;
	const u8* blk = row + 20 * b;
	float d = h2f(ld16(blk)), m = h2f(ld16(blk + 2));
	const u8* qs = blk + 4 + 8 * h;
#pragma unroll
	for (int i = 0; i < 8; i++) {
		int q = qs[i];
		w[i] = __fmul_rn((float)(q & 0xf), d) + m;
		w[8 + i] = __fmul_rn((float)(q >> 4), d) + m;
	}
	*p0 = 32 * b + 8 * h;
	*p1 = 32 * b + 16 + 8 * h;
}

template <>
__device__ __forceinline__ void unit<T_Q5_0>(const u8* __restrict__ row, int ncols, int u, float* w, int* p0, int* p1) {
	int b = u >> 1, h = u & 1;
	const u8* blk = row + 22 * b;
	float d = h2f(ld16(blk));
	u32 qh = (u32)ld16(blk + 2) | (u32)ld16(blk + 4) << 16;
	const u8* qs = blk + 6 + 8 * h;
#pragma unroll
	for (int i = 0; i < 8; i++) {
		int j = 8 * h + i, q = qs[i];
		int lo = (q & 0xf) | (int)((qh >> j) & 1) << 4;
		int hi = (q >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
		w[i] = (float)(lo - 16) * d;
		w[8 + i] = (float)(hi - 16) * d;
	}
	*p0 = 32 * b + 8 * h;
	*p1 = 32 * b + 16 + 8 * h;
}

template <>
__device__ __forceinline__ void unit<T_Q5_1>(const u8* __restrict__ row, int ncols, int u, float* w, int* p0, int* p1) {
	int b = u >> 1, h = u & 1;
	const u8* blk = row + 24 * b;
	float d = h2f(ld16(blk)), m = h2f(ld16(blk + 2));
	u32 qh = (u32)ld16(blk + 4) | (u32)ld16(blk + 6) << 16;
	const u8* qs = blk + 8 + 8 * h;
#pragma unroll
	for (int i = 0; i < 8; i++) {
		int j = 8 * h + i, q = qs[i];
		int lo = (q & 0xf) | (int)((qh >> j) & 1) << 4;
		int hi = (q >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
		w[i] = __fmul_rn((float)lo, d) + m;
		w[8 + i] = __fmul_rn((float)hi, d) + m;
	}
	*p0 = 32 * b + 8 * h;
	*p1 = 32 * b + 16 + 8 * h;
}

template <>
__device__ __forceinline__ void unit<T_Q4_0R>(const u8* __restrict__ row, int ncols, int u, float* w, int* p0, int* p1) {
	int b = u >> 1, h = u & 1;
	uint2 q = *(const uint2*)(row + 16 * b + 8 * h);
	float d = h2f(((const u16*)(row + 16 * (ncols / 32)))[b]);
#pragma unroll
	for (int i = 0; i < 8; i++) {
		int v = (int)(((i < 4 ? q.x : q.y) >> (8 * (i & 3))) & 0xff);
		w[i] = (float)((v & 0xf) - 8) * d;
		w[8 + i] = (float)((v >> 4) - 8) * d;
	}
	*p0 = 32 * b + 8 * h;
	*p1 = 32 * b + 16 + 8 * h;
}

template <>
__device__ __forceinline__ void unit<T_Q8_0R>(const u8* __restrict__ row, int ncols, int u, float* w, int* p0, int* p1) {
	int b = u >> 1, h = u & 1;
	uint4 q = *(const uint4*)(row + 32 * b + 16 * h);
	float d = h2f(((const u16*)(row + 32 * (ncols / 32)))[b]);
	u32 words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
	for (int i = 0; i < 16; i++) w[i] = (float)(i8)((words[i / 4] >> (8 * (i & 3))) & 0xff) * d;
	*p0 = 32 * b + 16 * h;
	*p1 = 32 * b + 16 * h + 8;
}

// q4_K and q5_K: unit v of a block is 8 bytes of qs at 32p + l0 (p = v/4,
// l0 = 8(v%4)): low nibbles in sub-block 2p, high nibbles in 2p+1.
template <>
__device__ __forceinline__ void unit<T_Q4_K>(const u8* __restrict__ row, int ncols, int u, float* w, int* p0, int* p1) {
	int b = u >> 4, v = u & 15, p = v >> 2, l0 = 8 * (v & 3);
	const u8* blk = row + 144 * b;
	float d = h2f(ld16(blk)), dmin = h2f(ld16(blk + 2));
	float sc0, m0, sc1, m1;
	scaleMinK4(2 * p, blk + 4, &sc0, &m0);
	scaleMinK4(2 * p + 1, blk + 4, &sc1, &m1);
	float dl0 = d * sc0, ml0 = dmin * m0, dl1 = d * sc1, ml1 = dmin * m1;
	const u8* q = blk + 16 + 32 * p + l0;
#pragma unroll
	for (int i = 0; i < 8; i++) {
		w[i] = __fmul_rn(dl0, (float)(q[i] & 0xf)) - ml0;
		w[8 + i] = __fmul_rn(dl1, (float)(q[i] >> 4)) - ml1;
	}
	*p0 = 256 * b + 64 * p + l0;
	*p1 = 256 * b + 64 * p + 32 + l0;
}

template <>
__device__ __forceinline__ void unit<T_Q5_K>(const u8* __restrict__ row, int ncols, int u, float* w, int* p0, int* p1) {
	int b = u >> 4, v = u & 15, p = v >> 2, l0 = 8 * (v & 3);
	const u8* blk = row + 176 * b;
	float d = h2f(ld16(blk)), dmin = h2f(ld16(blk + 2));
	float sc0, m0, sc1, m1;
	int s0 = 2 * p, s1 = 2 * p + 1;
	scaleMinK4(s0, blk + 4, &sc0, &m0);
	scaleMinK4(s1, blk + 4, &sc1, &m1);
	float dl0 = d * sc0, ml0 = dmin * m0, dl1 = d * sc1, ml1 = dmin * m1;
	const u8* qh = blk + 16 + l0;
	const u8* q = blk + 48 + 32 * p + l0;
#pragma unroll
	for (int i = 0; i < 8; i++) {
		int lo = (q[i] & 0xf) | ((qh[i] >> s0) & 1) << 4;
		int hi = (q[i] >> 4) | ((qh[i] >> s1) & 1) << 4;
		w[i] = __fmul_rn(dl0, (float)lo) - ml0;
		w[8 + i] = __fmul_rn(dl1, (float)hi) - ml1;
	}
	*p0 = 256 * b + 64 * p + l0;
	*p1 = 256 * b + 64 * p + 32 + l0;
}

// q6_K: per half h of 128 elements, element 32k+l has its low 4 bits in
// nibble k/2 of ql[64h + 32(k%2) + l] and its high 2 bits at bit 2k of
// qh[32h + l]. Unit v = (h, kk, j) reads ql[64h + 32kk + 8j ..+8]: its low
// nibbles are k = kk, its high nibbles k = kk+2, both at l = 8j...
template <>
__device__ __forceinline__ void unit<T_Q6_K>(const u8* __restrict__ row, int ncols, int u, float* w, int* p0, int* p1) {
	int b = u >> 4, v = u & 15, h = v >> 3, kk = (v >> 2) & 1, j = v & 3, l0 = 8 * j;
	const u8* blk = row + 210 * b;
	const u8* ql = blk + 64 * h + 32 * kk + l0;
	const u8* qh = blk + 128 + 32 * h + l0;
	const i8* scales = (const i8*)(blk + 192);
	float d = h2f(ld16(blk + 208));
	float dA = d * (float)scales[8 * h + 2 * kk + (j >> 1)];
	float dB = d * (float)scales[8 * h + 2 * (kk + 2) + (j >> 1)];
#pragma unroll
	for (int i = 0; i < 8; i++) {
		int qA = ((ql[i] & 0xf) | ((qh[i] >> (2 * kk)) & 3) << 4) - 32;
		int qB = ((ql[i] >> 4) | ((qh[i] >> (2 * (kk + 2))) & 3) << 4) - 32;
		w[i] = dA * (float)qA;
		w[8 + i] = dB * (float)qB;
	}
	*p0 = 256 * b + 128 * h + 32 * kk + l0;
	*p1 = 256 * b + 128 * h + 32 * (kk + 2) + l0;
}

// elem is element j of a float row: the tail past a row's last whole unit
// (block types have none: their rows are whole blocks of 32 or 256).
template <int T>
__device__ __forceinline__ float elem(const u8* __restrict__ row, int j) {
	if constexpr (T == T_F32)
		return ((const float*)row)[j];
	else if constexpr (T == T_F16)
		return h2f(((const u16*)row)[j]);
	else if constexpr (T == T_BF16)
		return __uint_as_float((u32)((const u16*)row)[j] << 16);
	else
		return 0.0f;
}

// dot8 is the product of eight weights with eight activations (32-byte
// aligned).
__device__ __forceinline__ float dot8(const float* w, const float* x) {
	float4 a = *(const float4*)x, b = *(const float4*)(x + 4);
	return w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y + w[6] * b.z + w[7] * b.w;
}

#define MAXR 8

// matvec: dst[r*nrows + i] = W[i]·x[r] for r < R ≤ RMAX (1 for decode,
// whose registers then hold one accumulator, else MAXR). wpr warps (1, 2,
// 4 or 8, all in one block of 8 warps) share a weight row, their lanes on
// alternate units, so that the row is read once for all R activation rows
// and a matrix of few rows still keeps every multiprocessor busy.
template <int T, int RMAX>
__device__ void matvec(float* __restrict__ dst, const u8* __restrict__ W, const float* __restrict__ x, int nrows,
                       int ncols, long long rowBytes, int R, int wpr) {
	__shared__ float part[8][MAXR];
	int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
	int g = blockIdx.x * (blockDim.x / 32) + warp;
	int i = g / wpr, k = g % wpr, stride = 32 * wpr;
	bool valid = i < nrows;
	const u8* row = W + (long long)(valid ? i : 0) * rowBytes;
	float acc[RMAX];
#pragma unroll
	for (int r = 0; r < RMAX; r++) acc[r] = 0;
	int units = valid ? ncols / 16 : 0;
#pragma unroll 2
	for (int u = 32 * k + lane; u < units; u += stride) {
		float w[16];
		int p0, p1;
		unit<T>(row, ncols, u, w, &p0, &p1);
#pragma unroll
		for (int r = 0; r < RMAX; r++) {
			if (r < R) acc[r] += dot8(w, x + (long long)r * ncols + p0) + dot8(w + 8, x + (long long)r * ncols + p1);
		}
	}
	for (int j = 16 * units + 32 * k + lane; valid && j < ncols; j += stride) {
		float w = elem<T>(row, j);
#pragma unroll
		for (int r = 0; r < RMAX; r++) {
			if (r < R) acc[r] += w * x[(long long)r * ncols + j];
		}
	}
#pragma unroll
	for (int r = 0; r < RMAX; r++) {
		float s = acc[r];
		for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
		if (lane == 0) part[warp][r] = s;
	}
	__syncthreads();
	if (!valid || k != 0 || lane >= R) return;
	float s = 0;
	for (int w = 0; w < wpr; w++) s += part[warp + w][lane];
	dst[(long long)lane * nrows + i] = s;
}

// put stores v at element i of a float32 array, or of an f16 one when half
// is set.
__device__ __forceinline__ void put(void* dst, int half, long long i, float v) {
	if (half)
		((u16*)dst)[i] = f2h(v);
	else
		((float*)dst)[i] = v;
}

// dequant writes rows of W as float32 or f16 (for prefill's GEMM); one
// thread per unit.
template <int T>
__device__ void dequant(void* __restrict__ dst, int half, const u8* __restrict__ W, int nrows, int ncols, long long rowBytes) {
	int units = ncols / 16, tail = ncols - 16 * units;
	long long full = (long long)nrows * units, total = full + (long long)nrows * tail;
	for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < total; g += (long long)gridDim.x * blockDim.x) {
		if (g >= full) {
			int i = (int)((g - full) / tail), j = 16 * units + (int)((g - full) % tail);
			put(dst, half, (long long)i * ncols + j, elem<T>(W + (long long)i * rowBytes, j));
			continue;
		}
		int i = (int)(g / units), u = (int)(g % units);
		float w[16];
		int p0, p1;
		unit<T>(W + (long long)i * rowBytes, ncols, u, w, &p0, &p1);
		long long base = (long long)i * ncols;
#pragma unroll
		for (int k = 0; k < 8; k++) {
			put(dst, half, base + p0 + k, w[k]);
			put(dst, half, base + p1 + k, w[8 + k]);
		}
	}
}

// embed writes row ids[r] of W into row r of dst; one block per row.
template <int T>
__device__ void embed(float* __restrict__ dst, const u8* __restrict__ W, const int* __restrict__ ids, int ncols,
                      long long rowBytes) {
	int r = blockIdx.x;
	const u8* row = W + (long long)ids[r] * rowBytes;
	float* out = dst + (long long)r * ncols;
	for (int u = threadIdx.x; u < ncols / 16; u += blockDim.x) {
		float w[16];
		int p0, p1;
		unit<T>(row, ncols, u, w, &p0, &p1);
#pragma unroll
		for (int k = 0; k < 8; k++) {
			out[p0 + k] = w[k];
			out[p1 + k] = w[8 + k];
		}
	}
	for (int j = 16 * (ncols / 16) + threadIdx.x; j < ncols; j += blockDim.x) out[j] = elem<T>(row, j);
}

#define WEIGHT_KERNELS(NAME, T)                                                                                  \
	extern "C" __global__ void matvec_##NAME(float* dst, const u8* W, const float* x, int nrows, int ncols,      \
	                                         long long rowBytes, int R, int wpr) {                               \
		if (R == 1)                                                                                              \
			matvec<T, 1>(dst, W, x, nrows, ncols, rowBytes, 1, wpr);                                             \
		else                                                                                                     \
			matvec<T, MAXR>(dst, W, x, nrows, ncols, rowBytes, R, wpr);                                          \
	}                                                                                                            \
	extern "C" __global__ void dequant_##NAME(void* dst, int half, const u8* W, int nrows, int ncols,           \
	                                          long long rowBytes) {                                              \
		dequant<T>(dst, half, W, nrows, ncols, rowBytes);                                                        \
	}                                                                                                            \
	extern "C" __global__ void embed_##NAME(float* dst, const u8* W, const int* ids, int ncols, long long rowBytes) { \
		embed<T>(dst, W, ids, ncols, rowBytes);                                                                  \
	}

WEIGHT_KERNELS(f32, T_F32)
WEIGHT_KERNELS(f16, T_F16)
WEIGHT_KERNELS(bf16, T_BF16)
WEIGHT_KERNELS(q4_1, T_Q4_1)
WEIGHT_KERNELS(q5_0, T_Q5_0)
WEIGHT_KERNELS(q5_1, T_Q5_1)
WEIGHT_KERNELS(q4_0r, T_Q4_0R)
WEIGHT_KERNELS(q8_0r, T_Q8_0R)
WEIGHT_KERNELS(q4_k, T_Q4_K)
WEIGHT_KERNELS(q5_k, T_Q5_K)
WEIGHT_KERNELS(q6_k, T_Q6_K)

// rne rounds to the nearest integer, ties to even, as quant's nearestInt.
__device__ __forceinline__ float rne(float v) { return rintf(v); }

// actq8a rounds x to the CPU's Q8A grid in place of y: per block of 32,
// d = amax/127, q = rne(x·127/amax), y = d·q. One warp per block.
extern "C" __global__ void actq8a(float* __restrict__ y, const float* __restrict__ x, int nblocks) {
	int blk = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
	if (blk >= nblocks) return;
	float v = x[(long long)blk * 32 + lane];
	float amax = fabsf(v);
	for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffff, amax, o));
	float d = amax / 127.0f;
	float id = amax != 0.0f ? 127.0f / amax : 0.0f;
	y[(long long)blk * 32 + lane] = d * rne(v * id);
}

// actq8k rounds x to the CPU's Q8_K grid: per block of 256, m = the first
// value of largest magnitude, iscale = -127/m, q = min(127, rne(iscale·x)),
// y = q/iscale (the stored d). One warp per block, 8 values per lane.
extern "C" __global__ void actq8k(float* __restrict__ y, const float* __restrict__ x, int nblocks) {
	int blk = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
	if (blk >= nblocks) return;
	const float* in = x + (long long)blk * 256;
	float* out = y + (long long)blk * 256;
	// Lane l holds elements l, l+32, ...: the first of largest magnitude is
	// the one with the smallest index among ties.
	float best = 0.0f, bestAbs = 0.0f;
	int bestIdx = 256;
	for (int k = 0; k < 8; k++) {
		int e = lane + 32 * k;
		float v = in[e], a = fabsf(v);
		if (a > bestAbs) {
			best = v, bestAbs = a, bestIdx = e;
		}
	}
	for (int o = 16; o > 0; o >>= 1) {
		float ob = __shfl_xor_sync(0xffffffff, best, o);
		float oa = __shfl_xor_sync(0xffffffff, bestAbs, o);
		int oi = __shfl_xor_sync(0xffffffff, bestIdx, o);
		if (oa > bestAbs || (oa == bestAbs && oi < bestIdx)) {
			best = ob, bestAbs = oa, bestIdx = oi;
		}
	}
	if (bestAbs == 0.0f) {
		for (int k = 0; k < 8; k++) out[lane + 32 * k] = 0.0f;
		return;
	}
	float iscale = -127.0f / best;
	float d = 1.0f / iscale;
	for (int k = 0; k < 8; k++) {
		int e = lane + 32 * k;
		out[e] = d * fminf(127.0f, rne(iscale * in[e]));
	}
}

// rmsnorm: dst[r] = x[r] / rms(x[r]) * w, the sum of squares in float64 as
// on the CPU. One block per row.
extern "C" __global__ void rmsnorm(float* __restrict__ dst, const float* __restrict__ x, const float* __restrict__ w,
                                   int n, float eps) {
	__shared__ double part[32];
	const float* in = x + (long long)blockIdx.x * n;
	float* out = dst + (long long)blockIdx.x * n;
	double ss = 0;
	for (int i = threadIdx.x; i < n; i += blockDim.x) ss += (double)in[i] * (double)in[i];
	for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffff, ss, o);
	if ((threadIdx.x & 31) == 0) part[threadIdx.x / 32] = ss;
	__syncthreads();
	if (threadIdx.x < 32) {
		ss = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0;
		for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffff, ss, o);
		if (threadIdx.x == 0) part[0] = ss;
	}
	__syncthreads();
	float scale = (float)(1.0 / sqrt(part[0] / (double)n + (double)eps));
	for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = in[i] * scale * w[i];
}

extern "C" __global__ void add(float* __restrict__ dst, const float* __restrict__ x, long long n) {
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
		dst[i] += x[i];
}

extern "C" __global__ void addrows(float* __restrict__ dst, const float* __restrict__ b, int n, long long total) {
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x)
		dst[i] += b[i % n];
}

extern "C" __global__ void swiglu(float* __restrict__ dst, const float* __restrict__ g, const float* __restrict__ u,
                                  long long n) {
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
		float v = g[i];
		dst[i] = v / (1.0f + expf(-v)) * u[i];
	}
}

// rope rotates pair i of every head of row r by pos[r]·freqs[i], in float64
// like the CPU (the angle grows with the position). One thread per (row,
// head, pair).
extern "C" __global__ void rope(float* __restrict__ x, int width, const int* __restrict__ pos,
                                const double* __restrict__ freqs, int headDim, int dims, int neox, int rows) {
	int half = dims / 2, heads = width / headDim;
	long long total = (long long)rows * heads * half;
	for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < total; g += (long long)gridDim.x * blockDim.x) {
		int i = (int)(g % half);
		int h = (int)(g / half % heads);
		int r = (int)(g / half / heads);
		double s, c;
		sincos((double)pos[r] * freqs[i], &s, &c);
		float* head = x + (long long)r * width + (long long)h * headDim;
		int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
		double x0 = head[a], x1 = head[b];
		head[a] = (float)(x0 * c - x1 * s);
		head[b] = (float)(x0 * s + x1 * c);
	}
}

// tohalf converts n float32 values to f16 (prefill's GEMM input).
extern "C" __global__ void tohalf(u16* __restrict__ dst, const float* __restrict__ src, long long n) {
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
		dst[i] = f2h(src[i]);
}

// store writes n float32 values of keys ks and of values vs into the
// cache buffers kc and vc (f16 or f32) after their first pasts[si] rows of
// kvDim values. The row count is read on the device, so that a decode
// step's launches do not change from one token to the next (and replay as
// one CUDA graph).
extern "C" __global__ void store(void* __restrict__ kc, void* __restrict__ vc, int f16, const int* __restrict__ pasts,
                                 int si, int kvDim, const float* __restrict__ ks, const float* __restrict__ vs,
                                 long long n) {
	long long off = (long long)pasts[si] * kvDim;
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
		if (f16) {
			((u16*)kc)[off + i] = f2h(ks[i]);
			((u16*)vc)[off + i] = f2h(vs[i]);
		} else {
			((float*)kc)[off + i] = ks[i];
			((float*)vc)[off + i] = vs[i];
		}
	}
}

__device__ __forceinline__ float cacheAt(const void* c, int f16, long long i) {
	return f16 ? h2f(((const u16*)c)[i]) : ((const float*)c)[i];
}

// blockMax and blockSum reduce v over the block through red (32 floats).
__device__ float blockMax(float v, float* red) {
	for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
	__syncthreads();
	if ((threadIdx.x & 31) == 0) red[threadIdx.x / 32] = v;
	__syncthreads();
	v = NEG_INF;
	for (int w = 0; w < blockDim.x / 32; w++) v = fmaxf(v, red[w]);
	return v;
}

__device__ float blockSum(float v, float* red) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
	__syncthreads();
	if ((threadIdx.x & 31) == 0) red[threadIdx.x / 32] = v;
	__syncthreads();
	v = 0;
	for (int w = 0; w < blockDim.x / 32; w++) v += red[w];
	return v;
}

// loadQuery copies a query row of hd values into shared memory.
__device__ void loadQuery(float* qs, const float* __restrict__ qr, int hd) {
	for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = qr[d];
	__syncthreads();
}

// scoreRows writes scale·q·k for the key rows t0..t1-1 (at kvOff in rows
// of kvDim) into sc[t - t0], one warp per row, its lanes across the head's
// dimensions so that each row is read in whole lines, and returns the
// block's largest score.
__device__ float scoreRows(const float* qs, const void* __restrict__ kc, int f16, long long kvOff, int kvDim, int hd,
                           float scale, int t0, int t1, float* sc, float* red) {
	int warp = threadIdx.x / 32, lane = threadIdx.x & 31, nwarps = blockDim.x / 32;
	float m = NEG_INF;
	for (int t = t0 + warp; t < t1; t += nwarps) {
		long long base = (long long)t * kvDim + kvOff;
		float s = 0;
		for (int d = lane; d < hd; d += 32) s += qs[d] * cacheAt(kc, f16, base + d);
		for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
		s *= scale;
		if (lane == 0) sc[t - t0] = s;
		m = fmaxf(m, s);
	}
	return blockMax(m, red);
}

// expRows replaces sc[0..n) by e^(sc - m) and returns the block's sum.
__device__ float expRows(float* sc, int n, float m, float* red) {
	float sum = 0;
	for (int t = threadIdx.x; t < n; t += blockDim.x) {
		float e = expf(sc[t] - m);
		sc[t] = e;
		sum += e;
	}
	return blockSum(sum, red);
}

// weighted writes Σ w[t - t0]·v[t] over the value rows t0..t1-1 into
// out[0..hd): thread (g, d) sums dimension d over the rows t ≡ g (mod
// groups) into acc, then the groups are added.
__device__ void weighted(const float* w, const void* __restrict__ vc, int f16, long long kvOff, int kvDim, int hd, int t0,
                         int t1, float* acc, float* __restrict__ out) {
	int groups = blockDim.x / hd;
	int g = threadIdx.x / hd, d = threadIdx.x % hd;
	if (g < groups) {
		float a = 0;
		for (int t = t0 + g; t < t1; t += groups) a += w[t - t0] * cacheAt(vc, f16, (long long)t * kvDim + kvOff + d);
		acc[g * hd + d] = a;
	}
	__syncthreads();
	for (int d2 = threadIdx.x; d2 < hd; d2 += blockDim.x) {
		float a = 0;
		for (int g2 = 0; g2 < groups; g2++) a += acc[g2 * hd + d2];
		out[d2] = a;
	}
}

// attention computes, for row i of one sequence and head h (block
// (h, i)), softmax(q·K^T·scale)·V over the cache rows 0..past+i, where
// past = pasts[si] is read on the device (see store). The
// cache is row-major: [row][nheadkv·hd]. Dynamic shared memory holds the
// query, the scores of the row and the partial outputs. When probs or
// scores are set, they receive the row's probabilities or scaled scores
// at [h][i][0..past+rows) (the caller zeroes them).
extern "C" __global__ void attention(float* __restrict__ out, const float* __restrict__ q, const void* __restrict__ kc,
                                     const void* __restrict__ vc, int f16, const int* __restrict__ pasts, int si, int rows,
                                     int nhead, int nheadkv, int hd, float scale, float* __restrict__ probs,
                                     float* __restrict__ scores) {
	extern __shared__ float sh[];
	__shared__ float red[32];
	int past = pasts[si];
	int h = blockIdx.x, i = blockIdx.y, n = past + i + 1;
	long long kvOff = (long long)(h / (nhead / nheadkv)) * hd;
	int kvDim = nheadkv * hd;
	float* qs = sh;            // hd
	float* sc = sh + hd;       // n
	float* part = sc + n;      // blockDim.x/hd groups × hd
	loadQuery(qs, q + ((long long)i * nhead + h) * hd, hd);
	float m = scoreRows(qs, kc, f16, kvOff, kvDim, hd, scale, 0, n, sc, red);
	long long obs = ((long long)h * rows + i) * (past + rows);
	if (scores)
		for (int t = threadIdx.x; t < n; t += blockDim.x) scores[obs + t] = sc[t];
	float inv = 1.0f / expRows(sc, n, m, red);
	for (int t = threadIdx.x; t < n; t += blockDim.x) {
		sc[t] *= inv;
		if (probs) probs[obs + t] = sc[t];
	}
	__syncthreads();
	weighted(sc, vc, f16, kvOff, kvDim, hd, 0, n, part, out + ((long long)i * nhead + h) * hd);
}

// attn_tiled is attention for many rows (prefill): block (h, y) takes
// query rows 16y..16y+15 of head h, 2 per warp, and walks the cache in
// tiles of 32 keys loaded once into shared memory for all 16 rows, with a
// running maximum and sum per row (online softmax, as FlashAttention).
// Lane j scores key j of a tile; each lane accumulates hd/32 output
// dimensions. Needs hd a multiple of 32, at most 128, and 256 threads.
#define QT 16
#define KT 32
extern "C" __global__ void attn_tiled(float* __restrict__ out, const float* __restrict__ q, const void* __restrict__ kc,
                                      const void* __restrict__ vc, int f16, const int* __restrict__ pasts, int si,
                                      int rows, int nhead, int nheadkv, int hd, float scale) {
	extern __shared__ float sh[];
	float* qs = sh;                 // QT × hd
	float* ks = qs + QT * hd;       // KT × (hd+1): a lane's key row, conflict-free
	float* vs = ks + KT * (hd + 1); // KT × hd
	int past = pasts[si];
	int h = blockIdx.x, r0 = blockIdx.y * QT;
	int kvh = h / (nhead / nheadkv), kvDim = nheadkv * hd;
	int warp = threadIdx.x / 32, lane = threadIdx.x & 31, dims = hd / 32;
	for (int e = threadIdx.x; e < QT * hd; e += blockDim.x) {
		int r = r0 + e / hd;
		qs[e] = r < rows ? q[((long long)r * nhead + h) * hd + e % hd] : 0.0f;
	}
	float m[2] = {NEG_INF, NEG_INF}, l[2] = {0, 0}, acc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
	int last = past + min(r0 + QT, rows); // keys the tile's last row sees
	for (int t0 = 0; t0 < last; t0 += KT) {
		__syncthreads();
		for (int e = threadIdx.x; e < KT * hd; e += blockDim.x) {
			int j = e / hd, d = e % hd, t = t0 + j;
			float kv = 0, vv = 0;
			if (t < last) {
				long long idx = (long long)t * kvDim + (long long)kvh * hd + d;
				kv = cacheAt(kc, f16, idx);
				vv = cacheAt(vc, f16, idx);
			}
			ks[j * (hd + 1) + d] = kv;
			vs[j * hd + d] = vv;
		}
		__syncthreads();
		for (int k = 0; k < 2; k++) {
			int qi = 2 * warp + k, i = r0 + qi, n = past + i + 1;
			if (i >= rows || t0 >= n) continue;
			int t = t0 + lane;
			float s = NEG_INF;
			if (t < n) {
				float a = 0;
				for (int d = 0; d < hd; d++) a += qs[qi * hd + d] * ks[lane * (hd + 1) + d];
				s = a * scale;
			}
			float tmax = s;
			for (int o = 16; o > 0; o >>= 1) tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffff, tmax, o));
			float mnew = fmaxf(m[k], tmax);
			float p = t < n ? expf(s - mnew) : 0.0f;
			float corr = expf(m[k] - mnew);
			float psum = p;
			for (int o = 16; o > 0; o >>= 1) psum += __shfl_xor_sync(0xffffffff, psum, o);
			l[k] = l[k] * corr + psum;
#pragma unroll
			for (int c = 0; c < 4; c++) {
				if (c >= dims) break;
				float a = acc[k][c] * corr;
				for (int j = 0; j < KT; j++) a += __shfl_sync(0xffffffff, p, j) * vs[j * hd + lane + 32 * c];
				acc[k][c] = a;
			}
			m[k] = mnew;
		}
	}
	for (int k = 0; k < 2; k++) {
		int i = r0 + 2 * warp + k;
		if (i >= rows) continue;
		float* o = out + ((long long)i * nhead + h) * hd;
		for (int c = 0; c < dims; c++) o[lane + 32 * c] = acc[k][c] / l[k];
	}
}

// attn_split is attention for rows whose context is long but few
// (decode; "flash-decoding"): block (h, i, c) covers cache rows
// [c·chunk, (c+1)·chunk) of row i's past+i+1 and writes to part its
// maximum score m, Σ e^(s-m) and the unnormalised Σ e^(s-m)·v, hd+2
// floats; attn_combine merges the chunks. The grid covers the whole cache,
// so that it does not change as the context grows (blocks past the end
// leave an empty record).
extern "C" __global__ void attn_split(float* __restrict__ part, const float* __restrict__ q, const void* __restrict__ kc,
                                      const void* __restrict__ vc, int f16, const int* __restrict__ pasts, int si,
                                      int rows, int nhead, int nheadkv, int hd, float scale, int chunk) {
	extern __shared__ float sh[];
	__shared__ float red[32];
	int h = blockIdx.x, i = blockIdx.y, c = blockIdx.z, n = pasts[si] + i + 1;
	int t0 = c * chunk, t1 = min(n, t0 + chunk);
	float* rec = part + (((long long)h * rows + i) * gridDim.z + c) * (hd + 2);
	if (t0 >= t1) {
		for (int d = threadIdx.x; d < hd + 2; d += blockDim.x) rec[d] = d == 0 ? NEG_INF : 0.0f;
		return;
	}
	long long kvOff = (long long)(h / (nhead / nheadkv)) * hd;
	int kvDim = nheadkv * hd;
	float* qs = sh;           // hd
	float* sc = sh + hd;      // chunk
	float* acc = sc + chunk;  // blockDim.x/hd groups × hd
	loadQuery(qs, q + ((long long)i * nhead + h) * hd, hd);
	float m = scoreRows(qs, kc, f16, kvOff, kvDim, hd, scale, t0, t1, sc, red);
	float sum = expRows(sc, t1 - t0, m, red);
	__syncthreads();
	weighted(sc, vc, f16, kvOff, kvDim, hd, t0, t1, acc, rec + 2);
	if (threadIdx.x == 0) {
		rec[0] = m;
		rec[1] = sum;
	}
}

// attn_combine merges attn_split's nchunks records of row i, head h
// (block (h, i)) into the output.
extern "C" __global__ void attn_combine(float* __restrict__ out, const float* __restrict__ part, int rows, int nhead,
                                        int hd, int nchunks) {
	int h = blockIdx.x, i = blockIdx.y;
	const float* recs = part + ((long long)h * rows + i) * nchunks * (hd + 2);
	float M = NEG_INF;
	for (int c = 0; c < nchunks; c++) M = fmaxf(M, recs[c * (hd + 2)]);
	float L = 0;
	for (int c = 0; c < nchunks; c++) L += recs[c * (hd + 2) + 1] * expf(recs[c * (hd + 2)] - M);
	float* o = out + ((long long)i * nhead + h) * hd;
	for (int d = threadIdx.x; d < hd; d += blockDim.x) {
		float a = 0;
		for (int c = 0; c < nchunks; c++) a += recs[c * (hd + 2) + 2 + d] * expf(recs[c * (hd + 2)] - M);
		o[d] = a / L;
	}
}

// gather copies rows idx[i] of src into row i of dst.
extern "C" __global__ void gather(float* __restrict__ dst, const float* __restrict__ src, const int* __restrict__ idx,
                                  int width) {
	const float* s = src + (long long)idx[blockIdx.x] * width;
	float* d = dst + (long long)blockIdx.x * width;
	for (int k = threadIdx.x; k < width; k += blockDim.x) d[k] = s[k];
}
