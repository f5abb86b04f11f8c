// Compute kernels of edged's Metal backend (package accel/metal). Each one
// mirrors an operation of the CPU backend (accel/cpu) and the block layouts
// of package quant; the Go side looks every kernel up by the name given
// here: a kernel function's own name, or the host_name of a template
// instance.
//
// Matrix products follow the CPU's arithmetic: quantized weights multiply
// activations quantized to 8 bits (quantize_q8a, quantize_q8k) with integer
// sums per block and float scaling per block, so that the results agree
// with the CPU's within float rounding.

#include <metal_stdlib>
using namespace metal;

// Parameter blocks, passed with setBytes. Every field is 4 bytes wide, so
// the Go structs of the same fields (params.go) have the same layout; a
// Linux test compares the field lists.
struct EmbedParams { uint cols; uint row_bytes; uint n; };
struct MatMulParams { uint rows; uint cols; uint row_bytes; uint act_rows; };
struct QuantParams { uint blocks; };
struct NormParams { uint n; float eps; };
struct ElemParams { uint n; uint width; };
struct RopeParams { uint rows; uint width; uint head_dim; uint half_dims; uint neox; };
struct StoreParams { uint n; uint src_off; uint dst_off; };
struct AttnParams { uint n_head; uint n_head_kv; uint head_dim; uint past; uint rows; uint q_row0; uint observe; float scale; };

// Weight rows per threadgroup (one simdgroup each) and activation rows per
// simdgroup of the matrix products, and the threadgroup size of rmsnorm and
// attention; params.go has the same numbers. A constant rather than
// [[threads_per_threadgroup]]: Metal wants that attribute's type to agree
// with [[threadgroup_position_in_grid]]'s, and the loops unroll better.
#define MM_SG 4
#define MM_NR 8
#define TG_THREADS 256

// Bits of AttnParams.observe: which observer outputs to fill.
#define OBSERVE_SCORES 1u
#define OBSERVE_PROBS 2u

// Block fields are read byte by byte: blocks of 18, 22 or 210 bytes leave
// halves and words unaligned.
static inline float ld_f16(device const uchar* p) {
    return float(as_type<half>(ushort(ushort(p[0]) | (ushort(p[1]) << 8))));
}

static inline uint ld_u32(device const uchar* p) {
    return uint(p[0]) | (uint(p[1]) << 8) | (uint(p[2]) << 16) | (uint(p[3]) << 24);
}

// nib is element l (0..31) of a q4/q5 block's 16 bytes of nibbles: the low
// nibbles hold elements 0..15, the high ones 16..31.
static inline uint nib(device const uchar* qs, uint l) {
    return l < 16 ? (qs[l] & 0xf) : (qs[l - 16] >> 4);
}

// scale_min_k4 is quant's scaleMinK4 (ggml's get_scale_min_k4).
static inline void scale_min_k4(uint j, device const uchar* s, thread uint& sc, thread uint& m) {
    if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
        m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// The weight types. at(row, j) is element j of a row, as quant's
// Dequantize computes it. The products follow quant's portable dot
// kernels: for the 32-value blocks, dot(block, q, da) is one block against
// the 8-bit activations q with scale da; for the k-quants, part(block, q,
// s, isum, msum) is part s of 8 of a block's integer sums and combine
// scales their totals, so that 8 lanes share a block and the float
// arithmetic per block stays the CPU's. The activation block sums the CPU
// reads from Q8A's s and Q8_K's bsums are summed here from q, which gives
// the same integers.

struct F32 {
    enum { BLOCK = 1, SIZE = 4 };
    static float at(device const uchar* row, uint j) { return ((device const float*)row)[j]; }
};

struct F16 {
    enum { BLOCK = 1, SIZE = 2 };
    static float at(device const uchar* row, uint j) { return float(((device const half*)row)[j]); }
};

struct Q4_0 {
    enum { BLOCK = 32, SIZE = 18 };
    static float at(device const uchar* row, uint j) {
        device const uchar* b = row + SIZE * (j / 32);
        return float(int(nib(b + 2, j % 32)) - 8) * ld_f16(b);
    }
    static float dot(device const uchar* b, device const char* q, float da) {
        int isum = 0;
        for (uint l = 0; l < 16; l++) {
            uint v = b[2 + l];
            isum += (int(v & 0xf) - 8) * int(q[l]) + (int(v >> 4) - 8) * int(q[l + 16]);
        }
        return ld_f16(b) * da * float(isum);
    }
};

struct Q4_1 {
    enum { BLOCK = 32, SIZE = 20 };
    static float at(device const uchar* row, uint j) {
        device const uchar* b = row + SIZE * (j / 32);
        return float(nib(b + 4, j % 32)) * ld_f16(b) + ld_f16(b + 2);
    }
    static float dot(device const uchar* b, device const char* q, float da) {
        int isum = 0, qsum = 0;
        for (uint l = 0; l < 16; l++) {
            uint v = b[4 + l];
            isum += int(v & 0xf) * int(q[l]) + int(v >> 4) * int(q[l + 16]);
            qsum += int(q[l]) + int(q[l + 16]);
        }
        return ld_f16(b) * da * float(isum) + ld_f16(b + 2) * (da * float(qsum));
    }
};

struct Q5_0 {
    enum { BLOCK = 32, SIZE = 22 };
    static float at(device const uchar* row, uint j) {
        device const uchar* b = row + SIZE * (j / 32);
        uint l = j % 32;
        uint q = nib(b + 6, l) | (((ld_u32(b + 2) >> l) & 1) << 4);
        return float(int(q) - 16) * ld_f16(b);
    }
    static float dot(device const uchar* b, device const char* q, float da) {
        uint qh = ld_u32(b + 2);
        int isum = 0;
        for (uint l = 0; l < 16; l++) {
            uint v = b[6 + l];
            int lo = int((v & 0xf) | (((qh >> l) & 1) << 4));
            int hi = int((v >> 4) | (((qh >> (l + 16)) & 1) << 4));
            isum += (lo - 16) * int(q[l]) + (hi - 16) * int(q[l + 16]);
        }
        return ld_f16(b) * da * float(isum);
    }
};

struct Q5_1 {
    enum { BLOCK = 32, SIZE = 24 };
    static float at(device const uchar* row, uint j) {
        device const uchar* b = row + SIZE * (j / 32);
        uint l = j % 32;
        uint q = nib(b + 8, l) | (((ld_u32(b + 4) >> l) & 1) << 4);
        return float(q) * ld_f16(b) + ld_f16(b + 2);
    }
    static float dot(device const uchar* b, device const char* q, float da) {
        uint qh = ld_u32(b + 4);
        int isum = 0, qsum = 0;
        for (uint l = 0; l < 16; l++) {
            uint v = b[8 + l];
            int lo = int((v & 0xf) | (((qh >> l) & 1) << 4));
            int hi = int((v >> 4) | (((qh >> (l + 16)) & 1) << 4));
            isum += lo * int(q[l]) + hi * int(q[l + 16]);
            qsum += int(q[l]) + int(q[l + 16]);
        }
        return ld_f16(b) * da * float(isum) + ld_f16(b + 2) * (da * float(qsum));
    }
};

struct Q8_0 {
    enum { BLOCK = 32, SIZE = 34 };
    static float at(device const uchar* row, uint j) {
        device const uchar* b = row + SIZE * (j / 32);
        return float(char(b[2 + j % 32])) * ld_f16(b);
    }
    static float dot(device const uchar* b, device const char* q, float da) {
        int isum = 0;
        for (uint l = 0; l < 32; l++) {
            isum += int(char(b[2 + l])) * int(q[l]);
        }
        return ld_f16(b) * da * float(isum);
    }
};

// q4_K: d f16 | dmin f16 | scales[12] | qs[128]; 8 sub-blocks of 32, the
// low nibbles of 32 bytes one sub-block, the high nibbles the next.
struct Q4_K {
    enum { BLOCK = 256, SIZE = 144 };
    static float at(device const uchar* row, uint j) {
        device const uchar* b = row + SIZE * (j / 256);
        uint l = j % 256, s = l / 32, sc, m;
        scale_min_k4(s, b + 4, sc, m);
        uint q = (b[16 + 32 * (s / 2) + l % 32] >> (4 * (s % 2))) & 0xf;
        return ld_f16(b) * float(sc) * float(q) - ld_f16(b + 2) * float(m);
    }
    // part is sub-block s's share of the block's integer sums.
    static void part(device const uchar* b, device const char* q, uint s, thread int& isum, thread int& msum) {
        uint sc, m;
        scale_min_k4(s, b + 4, sc, m);
        device const uchar* qs = b + 16 + 32 * (s / 2);
        uint shift = 4 * (s % 2);
        int d = 0, ysum = 0;
        for (uint l = 0; l < 32; l++) {
            int y = q[32 * s + l];
            d += int((qs[l] >> shift) & 0xf) * y;
            ysum += y;
        }
        isum = int(sc) * d;
        msum = int(m) * ysum;
    }
    static float combine(device const uchar* b, float da, int isum, int msum) {
        return ld_f16(b) * da * float(isum) - ld_f16(b + 2) * da * float(msum);
    }
};

// q5_K: q4_K with qh[32] before qs: bit s of qh[l] is the fifth bit of
// element l of sub-block s.
struct Q5_K {
    enum { BLOCK = 256, SIZE = 176 };
    static float at(device const uchar* row, uint j) {
        device const uchar* b = row + SIZE * (j / 256);
        uint l = j % 256, s = l / 32, e = l % 32, sc, m;
        scale_min_k4(s, b + 4, sc, m);
        uint q = ((b[48 + 32 * (s / 2) + e] >> (4 * (s % 2))) & 0xf) | (((b[16 + e] >> s) & 1) << 4);
        return ld_f16(b) * float(sc) * float(q) - ld_f16(b + 2) * float(m);
    }
    static void part(device const uchar* b, device const char* q, uint s, thread int& isum, thread int& msum) {
        uint sc, m;
        scale_min_k4(s, b + 4, sc, m);
        device const uchar* qh = b + 16;
        device const uchar* qs = b + 48 + 32 * (s / 2);
        uint shift = 4 * (s % 2);
        int d = 0, ysum = 0;
        for (uint l = 0; l < 32; l++) {
            int y = q[32 * s + l];
            d += int(((qs[l] >> shift) & 0xf) | (((qh[l] >> s) & 1) << 4)) * y;
            ysum += y;
        }
        isum = int(sc) * d;
        msum = int(m) * ysum;
    }
    static float combine(device const uchar* b, float da, int isum, int msum) {
        return ld_f16(b) * da * float(isum) - ld_f16(b + 2) * da * float(msum);
    }
};

// q6_K: ql[128] | qh[64] | scales[16] int8 | d f16; 16 sub-blocks of 16.
// Per half of 128 elements, element 32k+l has its low 4 bits in ql[64h +
// 32(k%2) + l] (low nibble for k < 2), its high 2 bits at bit 2k of
// qh[32h + l].
struct Q6_K {
    enum { BLOCK = 256, SIZE = 210 };
    static int q6(device const uchar* b, uint s, uint e) {
        uint h = s / 8, k = (s % 8) / 2, l = (s % 2) * 16 + e;
        uint lo = (b[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0xf;
        uint hi = (b[128 + 32 * h + l] >> (2 * k)) & 3;
        return int(lo | (hi << 4)) - 32;
    }
    static float at(device const uchar* row, uint j) {
        device const uchar* b = row + SIZE * (j / 256);
        uint l = j % 256, s = l / 16;
        return ld_f16(b + 208) * float(char(b[192 + s])) * float(q6(b, s, l % 16));
    }
    // part is the share of sub-blocks 2s and 2s+1 (of 16 each); q6_K has
    // no minimum, so msum stays 0.
    static void part(device const uchar* b, device const char* q, uint s, thread int& isum, thread int& msum) {
        isum = 0;
        msum = 0;
        for (uint k = 2 * s; k < 2 * s + 2; k++) {
            int d = 0;
            for (uint e = 0; e < 16; e++) {
                d += q6(b, k, e) * int(q[16 * k + e]);
            }
            isum += int(char(b[192 + k])) * d;
        }
    }
    static float combine(device const uchar* b, float da, int isum, int) {
        return ld_f16(b + 208) * da * float(isum);
    }
};

// embed writes row ids[r] of the table, dequantized, into row r of dst.
template <typename T>
kernel void embed(device const uchar* table [[buffer(0)]],
                  device const int* ids [[buffer(1)]],
                  device float* dst [[buffer(2)]],
                  constant EmbedParams& p [[buffer(3)]],
                  uint2 gid [[thread_position_in_grid]]) {
    if (gid.x >= p.cols || gid.y >= p.n) {
        return;
    }
    dst[ulong(gid.y) * p.cols + gid.x] = T::at(table + ulong(ids[gid.y]) * p.row_bytes, gid.x);
}

typedef decltype(embed<F32>) embed_t;
template [[host_name("embed_f32")]] kernel embed_t embed<F32>;
template [[host_name("embed_f16")]] kernel embed_t embed<F16>;
template [[host_name("embed_q4_0")]] kernel embed_t embed<Q4_0>;
template [[host_name("embed_q4_1")]] kernel embed_t embed<Q4_1>;
template [[host_name("embed_q5_0")]] kernel embed_t embed<Q5_0>;
template [[host_name("embed_q5_1")]] kernel embed_t embed<Q5_1>;
template [[host_name("embed_q8_0")]] kernel embed_t embed<Q8_0>;
template [[host_name("embed_q4_k")]] kernel embed_t embed<Q4_K>;
template [[host_name("embed_q5_k")]] kernel embed_t embed<Q5_K>;
template [[host_name("embed_q6_k")]] kernel embed_t embed<Q6_K>;

// quantize_q8a is quant's quantQ8A per block of 32 values: d = amax/127,
// q = rint(x·127/amax), ties to even like nearestInt.
kernel void quantize_q8a(device const float* x [[buffer(0)]],
                         device char* q [[buffer(1)]],
                         device float* d [[buffer(2)]],
                         constant QuantParams& p [[buffer(3)]],
                         uint i [[thread_position_in_grid]]) {
    if (i >= p.blocks) {
        return;
    }
    device const float* xb = x + ulong(i) * 32;
    float amax = 0;
    for (uint j = 0; j < 32; j++) {
        amax = max(amax, fabs(xb[j]));
    }
    float id = amax != 0 ? 127.0f / amax : 0.0f;
    for (uint j = 0; j < 32; j++) {
        q[ulong(i) * 32 + j] = char(int(rint(xb[j] * id)));
    }
    d[i] = amax / 127.0f;
}

// quantize_q8k is quant's quantQ8_K per block of 256 values: m is the
// value of largest magnitude with its sign, iscale = -127/m, q =
// min(127, rint(iscale·x)), d = 1/iscale; a block of zeros stays zero.
kernel void quantize_q8k(device const float* x [[buffer(0)]],
                         device char* q [[buffer(1)]],
                         device float* d [[buffer(2)]],
                         constant QuantParams& p [[buffer(3)]],
                         uint i [[thread_position_in_grid]]) {
    if (i >= p.blocks) {
        return;
    }
    device const float* xb = x + ulong(i) * 256;
    device char* qb = q + ulong(i) * 256;
    float amax = 0, m = 0;
    for (uint j = 0; j < 256; j++) {
        float a = fabs(xb[j]);
        if (amax < a) {
            amax = a;
            m = xb[j];
        }
    }
    if (m == 0) {
        for (uint j = 0; j < 256; j++) {
            qb[j] = 0;
        }
        d[i] = 0;
        return;
    }
    float iscale = -127.0f / m;
    for (uint j = 0; j < 256; j++) {
        qb[j] = char(min(127, int(rint(iscale * xb[j]))));
    }
    d[i] = 1.0f / iscale;
}

// matmul_q computes dst[r][n] = W[n]·x[r] for quantized weights: each
// simdgroup takes one weight row and MM_NR activation rows, its lanes
// blocks of the row. A row's result is the same whichever rows share its
// simdgroup.
template <typename T>
kernel void matmul_q(device const uchar* w [[buffer(0)]],
                     device const char* aq [[buffer(1)]],
                     device const float* ad [[buffer(2)]],
                     device float* dst [[buffer(3)]],
                     constant MatMulParams& p [[buffer(4)]],
                     uint2 tg [[threadgroup_position_in_grid]],
                     ushort sg [[simdgroup_index_in_threadgroup]],
                     ushort lane [[thread_index_in_simdgroup]]) {
    uint n = tg.x * MM_SG + sg, r0 = tg.y * MM_NR;
    if (n >= p.rows || r0 >= p.act_rows) {
        return;
    }
    uint nb = p.cols / T::BLOCK, nr = min(uint(MM_NR), p.act_rows - r0);
    device const uchar* row = w + ulong(n) * p.row_bytes;
    float acc[MM_NR] = {0};
    for (uint b = lane; b < nb; b += 32) {
        device const uchar* blk = row + b * T::SIZE;
        for (uint k = 0; k < nr; k++) {
            ulong r = r0 + k;
            acc[k] += T::dot(blk, aq + r * p.cols + b * T::BLOCK, ad[r * nb + b]);
        }
    }
    for (uint k = 0; k < nr; k++) {
        float s = simd_sum(acc[k]);
        if (lane == 0) {
            dst[ulong(r0 + k) * p.rows + n] = s;
        }
    }
}

typedef decltype(matmul_q<Q4_0>) matmul_q_t;
template [[host_name("matmul_q4_0")]] kernel matmul_q_t matmul_q<Q4_0>;
template [[host_name("matmul_q4_1")]] kernel matmul_q_t matmul_q<Q4_1>;
template [[host_name("matmul_q5_0")]] kernel matmul_q_t matmul_q<Q5_0>;
template [[host_name("matmul_q5_1")]] kernel matmul_q_t matmul_q<Q5_1>;
template [[host_name("matmul_q8_0")]] kernel matmul_q_t matmul_q<Q8_0>;

// matmul_k is matmul_q for the k-quants, whose rows have few blocks (16 in
// 4096 values): eight lanes share each block, one part each, and add
// their integer sums with shuffles (exact) before one lane scales them.
template <typename T>
kernel void matmul_k(device const uchar* w [[buffer(0)]],
                     device const char* aq [[buffer(1)]],
                     device const float* ad [[buffer(2)]],
                     device float* dst [[buffer(3)]],
                     constant MatMulParams& p [[buffer(4)]],
                     uint2 tg [[threadgroup_position_in_grid]],
                     ushort sg [[simdgroup_index_in_threadgroup]],
                     ushort lane [[thread_index_in_simdgroup]]) {
    uint n = tg.x * MM_SG + sg, r0 = tg.y * MM_NR;
    if (n >= p.rows || r0 >= p.act_rows) {
        return;
    }
    uint nb = p.cols / T::BLOCK, nr = min(uint(MM_NR), p.act_rows - r0);
    uint part = lane % 8;
    device const uchar* row = w + ulong(n) * p.row_bytes;
    float acc[MM_NR] = {0};
    // The 8 lanes of a block run the loop alike, so their shuffles meet.
    for (uint b = lane / 8; b < nb; b += 4) {
        device const uchar* blk = row + b * T::SIZE;
        for (uint k = 0; k < nr; k++) {
            ulong r = r0 + k;
            int isum, msum;
            T::part(blk, aq + r * p.cols + b * T::BLOCK, part, isum, msum);
            for (ushort m = 1; m < 8; m <<= 1) {
                isum += simd_shuffle_xor(isum, m);
                msum += simd_shuffle_xor(msum, m);
            }
            if (part == 0) {
                acc[k] += T::combine(blk, ad[r * nb + b], isum, msum);
            }
        }
    }
    for (uint k = 0; k < nr; k++) {
        float s = simd_sum(acc[k]);
        if (lane == 0) {
            dst[ulong(r0 + k) * p.rows + n] = s;
        }
    }
}

typedef decltype(matmul_k<Q4_K>) matmul_k_t;
template [[host_name("matmul_q4_k")]] kernel matmul_k_t matmul_k<Q4_K>;
template [[host_name("matmul_q5_k")]] kernel matmul_k_t matmul_k<Q5_K>;
template [[host_name("matmul_q6_k")]] kernel matmul_k_t matmul_k<Q6_K>;

// matmul_f is matmul_q for float weights, which multiply the float
// activations as they are (buffer 2 is unused).
template <typename T>
kernel void matmul_f(device const uchar* w [[buffer(0)]],
                     device const float* x [[buffer(1)]],
                     device float* dst [[buffer(3)]],
                     constant MatMulParams& p [[buffer(4)]],
                     uint2 tg [[threadgroup_position_in_grid]],
                     ushort sg [[simdgroup_index_in_threadgroup]],
                     ushort lane [[thread_index_in_simdgroup]]) {
    uint n = tg.x * MM_SG + sg, r0 = tg.y * MM_NR;
    if (n >= p.rows || r0 >= p.act_rows) {
        return;
    }
    uint nr = min(uint(MM_NR), p.act_rows - r0);
    device const uchar* row = w + ulong(n) * p.row_bytes;
    float acc[MM_NR] = {0};
    for (uint j = lane; j < p.cols; j += 32) {
        float wv = T::at(row, j);
        for (uint k = 0; k < nr; k++) {
            acc[k] += wv * x[ulong(r0 + k) * p.cols + j];
        }
    }
    for (uint k = 0; k < nr; k++) {
        float s = simd_sum(acc[k]);
        if (lane == 0) {
            dst[ulong(r0 + k) * p.rows + n] = s;
        }
    }
}

typedef decltype(matmul_f<F32>) matmul_f_t;
template [[host_name("matmul_f32")]] kernel matmul_f_t matmul_f<F32>;
template [[host_name("matmul_f16")]] kernel matmul_f_t matmul_f<F16>;

// tg_sum and tg_max reduce v over a threadgroup of nsg full simdgroups;
// every thread gets the result. red holds one value per simdgroup.
static float tg_sum(float v, threadgroup float* red, ushort sg, ushort lane, uint nsg) {
    v = simd_sum(v);
    if (lane == 0) {
        red[sg] = v;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    v = 0;
    for (uint k = 0; k < nsg; k++) {
        v += red[k];
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    return v;
}

static float tg_max(float v, threadgroup float* red, ushort sg, ushort lane, uint nsg) {
    v = simd_max(v);
    if (lane == 0) {
        red[sg] = v;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    v = red[0];
    for (uint k = 1; k < nsg; k++) {
        v = max(v, red[k]);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    return v;
}

// rmsnorm normalises one row per threadgroup: the sum of squares in float
// (the CPU sums in float64).
kernel void rmsnorm(device const float* x [[buffer(0)]],
                    device const float* w [[buffer(1)]],
                    device float* dst [[buffer(2)]],
                    constant NormParams& p [[buffer(3)]],
                    uint r [[threadgroup_position_in_grid]],
                    uint t [[thread_index_in_threadgroup]],
                    ushort sg [[simdgroup_index_in_threadgroup]],
                    ushort lane [[thread_index_in_simdgroup]]) {
    threadgroup float red[32];
    device const float* in = x + ulong(r) * p.n;
    device float* out = dst + ulong(r) * p.n;
    float ss = 0;
    for (uint i = t; i < p.n; i += TG_THREADS) {
        ss += in[i] * in[i];
    }
    ss = tg_sum(ss, red, sg, lane, TG_THREADS / 32);
    float scale = 1.0f / sqrt(ss / float(p.n) + p.eps);
    for (uint i = t; i < p.n; i += TG_THREADS) {
        out[i] = in[i] * scale * w[i];
    }
}

// add_rows adds the bias b (width values) to each row of dst.
kernel void add_rows(device float* dst [[buffer(0)]],
                     device const float* b [[buffer(1)]],
                     constant ElemParams& p [[buffer(2)]],
                     uint i [[thread_position_in_grid]]) {
    if (i < p.n) {
        dst[i] += b[i % p.width];
    }
}

kernel void add(device float* dst [[buffer(0)]],
                device const float* x [[buffer(1)]],
                constant ElemParams& p [[buffer(2)]],
                uint i [[thread_position_in_grid]]) {
    if (i < p.n) {
        dst[i] += x[i];
    }
}

kernel void swiglu(device float* dst [[buffer(0)]],
                   device const float* gate [[buffer(1)]],
                   device const float* up [[buffer(2)]],
                   constant ElemParams& p [[buffer(3)]],
                   uint i [[thread_position_in_grid]]) {
    if (i < p.n) {
        float g = gate[i];
        dst[i] = g / (1.0f + exp(-g)) * up[i];
    }
}

// rope rotates pair i of head h of row r. cs holds each row's cos and sin
// per pair, interleaved, computed on the host in float64 (the angles
// pos·freq outgrow float32's precision) and rounded to float32.
kernel void rope(device float* x [[buffer(0)]],
                 device const float* cs [[buffer(1)]],
                 constant RopeParams& p [[buffer(2)]],
                 uint3 gid [[thread_position_in_grid]]) {
    uint i = gid.x, h = gid.y, r = gid.z;
    if (i >= p.half_dims || (h + 1) * p.head_dim > p.width || r >= p.rows) {
        return;
    }
    device const float* a = cs + 2 * (ulong(r) * p.half_dims + i);
    float c = a[0], s = a[1];
    uint j0 = 2 * i, j1 = 2 * i + 1;
    if (p.neox != 0) {
        j0 = i;
        j1 = i + p.half_dims;
    }
    device float* head = x + ulong(r) * p.width + h * p.head_dim;
    float x0 = head[j0], x1 = head[j1];
    head[j0] = x0 * c - x1 * s;
    head[j1] = x0 * s + x1 * c;
}

// store copies n values of src into a cache buffer, converting them to
// the cache's type (rounding to nearest even, as quant.F32ToF16).
template <typename T>
kernel void store(device const float* src [[buffer(0)]],
                  device T* dst [[buffer(1)]],
                  constant StoreParams& p [[buffer(2)]],
                  uint i [[thread_position_in_grid]]) {
    if (i < p.n) {
        dst[ulong(p.dst_off) + i] = T(src[ulong(p.src_off) + i]);
    }
}

// The instances differ in signature, so each has its own typedef.
typedef decltype(store<float>) store_f32_t;
typedef decltype(store<half>) store_f16_t;
template [[host_name("store_f32")]] kernel store_f32_t store<float>;
template [[host_name("store_f16")]] kernel store_f16_t store<half>;

// attention computes one query row i of one head h per threadgroup over
// the cache rows [0, past+i], both caches row-major ([row][kv_dim]). Like
// the CPU it finds the exact maximum score first, then sums e^(s-max) and
// the values weighted by it, and divides by the sum at the end; the scores
// are computed twice rather than stored, so memory does not grow with the
// context. Observer outputs (layout [n_head][rows][past+rows]) get the
// scores and the probabilities, masked entries zero.
template <typename T>
kernel void attention(device const float* q [[buffer(0)]],
                      device const T* kc [[buffer(1)]],
                      device const T* vc [[buffer(2)]],
                      device float* out [[buffer(3)]],
                      device float* scores [[buffer(4)]],
                      device float* probs [[buffer(5)]],
                      constant AttnParams& p [[buffer(6)]],
                      uint2 tg [[threadgroup_position_in_grid]],
                      uint t [[thread_index_in_threadgroup]],
                      ushort sg [[simdgroup_index_in_threadgroup]],
                      ushort lane [[thread_index_in_simdgroup]]) {
    threadgroup float chunk[TG_THREADS];
    threadgroup float red[32];
    uint i = tg.x, h = tg.y, hd = p.head_dim;
    uint kv_dim = p.n_head_kv * hd, g = h / (p.n_head / p.n_head_kv);
    uint n = p.past + i + 1, width = p.past + p.rows;
    ulong qo = (ulong(p.q_row0) + i) * p.n_head * hd + h * hd;
    device const float* qh = q + qo;
    device float* o = out + qo;
    ulong obs = (ulong(h) * p.rows + i) * width;
    device const T* kh = kc + g * hd;
    device const T* vh = vc + g * hd;

    float m = -INFINITY;
    for (uint j = t; j < n; j += TG_THREADS) {
        float s = 0;
        for (uint d = 0; d < hd; d++) {
            s += qh[d] * float(kh[ulong(j) * kv_dim + d]);
        }
        s *= p.scale;
        if (p.observe & OBSERVE_SCORES) {
            scores[obs + j] = s;
        }
        m = max(m, s);
    }
    m = tg_max(m, red, sg, lane, TG_THREADS / 32);

    for (uint d = t; d < hd; d += TG_THREADS) {
        o[d] = 0;
    }
    float l = 0;
    for (uint j0 = 0; j0 < n; j0 += TG_THREADS) {
        uint j = j0 + t;
        float e = 0;
        if (j < n) {
            float s = 0;
            for (uint d = 0; d < hd; d++) {
                s += qh[d] * float(kh[ulong(j) * kv_dim + d]);
            }
            e = exp(s * p.scale - m);
            l += e;
            if (p.observe & OBSERVE_PROBS) {
                probs[obs + j] = e;
            }
        }
        chunk[t] = e;
        threadgroup_barrier(mem_flags::mem_threadgroup);
        uint cnt = min(uint(TG_THREADS), n - j0);
        for (uint d = t; d < hd; d += TG_THREADS) {
            float acc = 0;
            for (uint k = 0; k < cnt; k++) {
                acc += chunk[k] * float(vh[ulong(j0 + k) * kv_dim + d]);
            }
            o[d] += acc;
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    float inv = 1.0f / tg_sum(l, red, sg, lane, TG_THREADS / 32);
    for (uint d = t; d < hd; d += TG_THREADS) {
        o[d] *= inv;
    }
    // Each thread rescales the probabilities it wrote itself (j ≡ t mod
    // TG_THREADS), so no barrier is needed.
    for (uint j = t; j < width; j += TG_THREADS) {
        if (p.observe & OBSERVE_PROBS) {
            probs[obs + j] = j < n ? probs[obs + j] * inv : 0;
        }
        if ((p.observe & OBSERVE_SCORES) && j >= n) {
            scores[obs + j] = 0;
        }
    }
}

typedef decltype(attention<float>) attention_f32_t;
typedef decltype(attention<half>) attention_f16_t;
template [[host_name("attention_f32")]] kernel attention_f32_t attention<float>;
template [[host_name("attention_f16")]] kernel attention_f16_t attention<half>;

// gather copies rows idx[i] of src into row i of dst.
kernel void gather(device float* dst [[buffer(0)]],
                   device const float* src [[buffer(1)]],
                   device const int* idx [[buffer(2)]],
                   constant ElemParams& p [[buffer(3)]],
                   uint i [[thread_position_in_grid]]) {
    if (i < p.n) {
        dst[i] = src[ulong(idx[i / p.width]) * p.width + i % p.width];
    }
}
