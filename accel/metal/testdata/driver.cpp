// An emulator of kernels.metal on the CPU, for the package's tests on
// systems without Metal: the Metal source is compiled as C++ (the test
// strips its #include and turns its threadgroup arrays into statics), each
// threadgroup runs as one std::thread per GPU thread, one threadgroup at a
// time, and simdgroup and threadgroup operations synchronise those threads.
//
// Usage: driver KERNEL GX GY GZ TX TY TZ PARAMS [BUFFER OFFSET]...
// Buffers are files, read before the dispatch and written back after it;
// a file named twice is one buffer.

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

typedef unsigned int uint;
typedef unsigned char uchar;
typedef unsigned short ushort;
typedef unsigned long ulong;
typedef _Float16 half;

struct uint2 { uint x, y; };
struct uint3 { uint x, y, z; };

template <typename T, typename U> T as_type(U u) {
    static_assert(sizeof(T) == sizeof(U));
    T t;
    std::memcpy(&t, &u, sizeof t);
    return t;
}

using std::exp;
using std::fabs;
using std::max;
using std::min;
using std::rint;
using std::sqrt;

enum class mem_flags { mem_threadgroup, mem_device };

// A lane's side of simd_shuffle_xor: the values it offered, by its shuffle
// count modulo a ring, and that count. The ring is far longer than a lane
// can run ahead of its partners: a butterfly of shuffles (xor 1, 2, 4)
// makes every lane of a group wait for all the others once per round.
struct Lane {
    std::atomic<unsigned> gen{0};
    int val[64];
};

// The synchronisation state of one simdgroup and of one threadgroup.
struct Simdgroup {
    std::barrier<> bar{32};
    float vals[32];
    Lane lanes[32];
};

struct Group {
    std::unique_ptr<std::barrier<>> bar;
    std::vector<std::unique_ptr<Simdgroup>> sgs;
};

// What a thread knows about itself.
struct Ctx {
    uint3 gid, tg;
    uint t, nt;
    ushort sg, lane;
    Group* group;
};

thread_local Ctx* self;

void threadgroup_barrier(mem_flags) { self->group->bar->arrive_and_wait(); }

template <typename F> float simd_reduce(float v, F f) {
    Simdgroup& s = *self->group->sgs[self->sg];
    s.vals[self->lane] = v;
    s.bar.arrive_and_wait();
    float r = s.vals[0];
    for (int i = 1; i < 32; i++) r = f(r, s.vals[i]);
    s.bar.arrive_and_wait();
    return r;
}

// simd_shuffle_xor pairs lanes, not the whole simdgroup: lanes that left a
// loop early do not take part, so it waits for its partner only.
thread_local unsigned shuffles;

int simd_shuffle_xor(int v, ushort mask) {
    Simdgroup& s = *self->group->sgs[self->sg];
    unsigned g = shuffles++;
    Lane& me = s.lanes[self->lane];
    me.val[g % 64] = v;
    me.gen.store(g + 1, std::memory_order_release);
    Lane& other = s.lanes[self->lane ^ mask];
    while (other.gen.load(std::memory_order_acquire) < g + 1) std::this_thread::yield();
    return other.val[g % 64];
}

float simd_sum(float v) { return simd_reduce(v, [](float a, float b) { return a + b; }); }
float simd_max(float v) { return simd_reduce(v, [](float a, float b) { return max(a, b); }); }

#define kernel
#define device
#define constant const
#define thread
#define threadgroup
#include "kernels.cpp"
#undef kernel
#undef device
#undef constant
#undef thread
#undef threadgroup

typedef std::function<void(Ctx&, void**, const void*)> Invoker;

#define P(T) (*(const T*)p)
#define EMBED(T) [](Ctx& c, void** a, const void* p) { embed<T>((const uchar*)a[0], (const int*)a[1], (float*)a[2], P(EmbedParams), uint2{c.gid.x, c.gid.y}); }
#define MATMUL_Q(T) [](Ctx& c, void** a, const void* p) { matmul_q<T>((const uchar*)a[0], (const char*)a[1], (const float*)a[2], (float*)a[3], P(MatMulParams), uint2{c.tg.x, c.tg.y}, c.sg, c.lane); }
#define MATMUL_F(T) [](Ctx& c, void** a, const void* p) { matmul_f<T>((const uchar*)a[0], (const float*)a[1], (float*)a[3], P(MatMulParams), uint2{c.tg.x, c.tg.y}, c.sg, c.lane); }
#define MATMUL_K(T) [](Ctx& c, void** a, const void* p) { matmul_k<T>((const uchar*)a[0], (const char*)a[1], (const float*)a[2], (float*)a[3], P(MatMulParams), uint2{c.tg.x, c.tg.y}, c.sg, c.lane); }
#define QUANT(f) [](Ctx& c, void** a, const void* p) { f((const float*)a[0], (char*)a[1], (float*)a[2], P(QuantParams), c.gid.x); }
#define STORE(T) [](Ctx& c, void** a, const void* p) { store<T>((const float*)a[0], (T*)a[1], P(StoreParams), c.gid.x); }
#define ATTN(T) [](Ctx& c, void** a, const void* p) { attention<T>((const float*)a[0], (const T*)a[1], (const T*)a[2], (float*)a[3], (float*)a[4], (float*)a[5], P(AttnParams), uint2{c.tg.x, c.tg.y}, c.t, c.sg, c.lane); }

static const std::map<std::string, Invoker> kernels = {
    {"embed_f32", EMBED(F32)}, {"embed_f16", EMBED(F16)}, {"embed_q4_0", EMBED(Q4_0)}, {"embed_q4_1", EMBED(Q4_1)},
    {"embed_q5_0", EMBED(Q5_0)}, {"embed_q5_1", EMBED(Q5_1)}, {"embed_q8_0", EMBED(Q8_0)}, {"embed_q4_k", EMBED(Q4_K)},
    {"embed_q5_k", EMBED(Q5_K)}, {"embed_q6_k", EMBED(Q6_K)},
    {"matmul_f32", MATMUL_F(F32)}, {"matmul_f16", MATMUL_F(F16)},
    {"matmul_q4_0", MATMUL_Q(Q4_0)}, {"matmul_q4_1", MATMUL_Q(Q4_1)}, {"matmul_q5_0", MATMUL_Q(Q5_0)}, {"matmul_q5_1", MATMUL_Q(Q5_1)},
    {"matmul_q8_0", MATMUL_Q(Q8_0)}, {"matmul_q4_k", MATMUL_K(Q4_K)}, {"matmul_q5_k", MATMUL_K(Q5_K)}, {"matmul_q6_k", MATMUL_K(Q6_K)},
    {"quantize_q8a", QUANT(quantize_q8a)}, {"quantize_q8k", QUANT(quantize_q8k)},
    {"store_f32", STORE(float)}, {"store_f16", STORE(half)},
    {"attention_f32", ATTN(float)}, {"attention_f16", ATTN(half)},
    {"rmsnorm", [](Ctx& c, void** a, const void* p) { rmsnorm((const float*)a[0], (const float*)a[1], (float*)a[2], P(NormParams), c.tg.x, c.t, c.sg, c.lane); }},
    {"add_rows", [](Ctx& c, void** a, const void* p) { add_rows((float*)a[0], (const float*)a[1], P(ElemParams), c.gid.x); }},
    {"add", [](Ctx& c, void** a, const void* p) { add((float*)a[0], (const float*)a[1], P(ElemParams), c.gid.x); }},
    {"swiglu", [](Ctx& c, void** a, const void* p) { swiglu((float*)a[0], (const float*)a[1], (const float*)a[2], P(ElemParams), c.gid.x); }},
    {"rope", [](Ctx& c, void** a, const void* p) { rope((float*)a[0], (const float*)a[1], P(RopeParams), uint3{c.gid.x, c.gid.y, c.gid.z}); }},
    {"gather", [](Ctx& c, void** a, const void* p) { gather((float*)a[0], (const float*)a[1], (const int*)a[2], P(ElemParams), c.gid.x); }},
};

static std::vector<char> readFile(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}

int main(int argc, char** argv) {
    if (argc < 9 || argc % 2 == 0) {
        std::fprintf(stderr, "usage: driver KERNEL GX GY GZ TX TY TZ PARAMS [BUFFER OFFSET]...\n");
        return 2;
    }
    auto k = kernels.find(argv[1]);
    if (k == kernels.end()) {
        std::fprintf(stderr, "no kernel %s\n", argv[1]);
        return 2;
    }
    uint g[3], n[3];
    for (int i = 0; i < 3; i++) {
        g[i] = std::stoul(argv[2 + i]);
        n[i] = std::stoul(argv[5 + i]);
    }
    std::vector<char> params = readFile(argv[8]);
    std::map<std::string, std::vector<char>> files;
    std::vector<void*> args;
    for (int i = 9; i < argc; i += 2) {
        auto& data = files.try_emplace(argv[i], readFile(argv[i])).first->second;
        args.push_back(data.data() + std::stoul(argv[i + 1]));
    }
    uint nt = n[0] * n[1] * n[2];
    if (nt % 32 != 0) {
        std::fprintf(stderr, "threadgroup of %u threads: not whole simdgroups\n", nt);
        return 2;
    }
    for (uint z = 0; z < g[2]; z++)
        for (uint y = 0; y < g[1]; y++)
            for (uint x = 0; x < g[0]; x++) {
                Group group;
                group.bar = std::make_unique<std::barrier<>>(nt);
                for (uint s = 0; s < nt / 32; s++) group.sgs.push_back(std::make_unique<Simdgroup>());
                std::vector<std::thread> threads;
                for (uint t = 0; t < nt; t++) {
                    threads.emplace_back([&, t] {
                        uint tx = t % n[0], ty = t / n[0] % n[1], tz = t / (n[0] * n[1]);
                        Ctx c{{x * n[0] + tx, y * n[1] + ty, z * n[2] + tz}, {x, y, z}, t, nt, ushort(t / 32), ushort(t % 32), &group};
                        self = &c;
                        k->second(c, args.data(), params.data());
                    });
                }
                for (auto& th : threads) th.join();
            }
    for (auto& [path, data] : files) {
        std::ofstream(path, std::ios::binary).write(data.data(), data.size());
    }
    return 0;
}
