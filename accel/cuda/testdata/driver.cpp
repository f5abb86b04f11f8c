// An emulator of kernels.cu on the CPU, for the package's tests on systems
// without a CUDA device: the CUDA source is compiled as C++ (the test turns
// its two inline PTX conversions into calls and its dynamic shared array
// into a pointer; the CUDA keywords are macros here), each block runs as
// one coroutine per CUDA thread, one block at a time, and __syncthreads
// and warp shuffles switch between those coroutines.
//
// Usage: driver KERNEL GX GY GZ BX BY BZ SHARED SLOTS [ADDR SIZE FILE]...
// SLOTS is the kernel's 16 parameter slots (cuLaunchKernel's 8-byte
// values) in hex, comma-separated. Device memory is mapped at its device
// addresses, so that pointer parameters need no translation: each region
// is read from its file before the launch and written back after it.

#include <sys/mman.h>
#include <ucontext.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

struct uint2 { unsigned x, y; };
struct uint3 { unsigned x, y, z; };
struct uint4 { unsigned x, y, z, w; };
struct float4 { float x, y, z, w; };

uint3 threadIdx, blockIdx;
uint3 blockDim, gridDim;

// Dynamic shared memory (extern __shared__): more than any device offers.
alignas(16) static float emu_dyn_shared[64 * 1024];

static float emu_h2f(unsigned short h) { return (float)std::bit_cast<_Float16>(h); }
static unsigned short emu_f2h(float f) { return std::bit_cast<unsigned short>((_Float16)f); }

static float __int_as_float(int i) { return std::bit_cast<float>(i); }
static float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
static float __fmul_rn(float a, float b) { return a * b; }
using std::min;

// Each CUDA thread of a block is a coroutine (ucontext) on the process's
// one thread, switched only where it waits: at __syncthreads and for a
// partner's value in a shuffle. A thread leaving the kernel early drops
// out of the barrier, as exited threads do on the GPU.
struct Fiber {
    ucontext_t ctx;
    unsigned tid;
    unsigned shuffles;
    bool done;
};

static ucontext_t sched;
static Fiber* cur;
// events counts arrivals at barriers, shuffle offers and exits: a round of
// the scheduler without one is a deadlock.
static unsigned long events;

static void yield_() { swapcontext(&cur->ctx, &sched); }

struct SyncBar {
    int expected = 0, arrived = 0;
    unsigned gen = 0;
    void wait() {
        unsigned g = gen;
        events++;
        if (++arrived == expected) {
            arrived = 0;
            gen++;
            return;
        }
        while (gen == g) yield_();
    }
    void leave() {
        events++;
        expected--;
        if (arrived > 0 && arrived == expected) {
            arrived = 0;
            gen++;
        }
    }
};

// A lane's side of a shuffle: the values it offered, by its shuffle count
// modulo a ring, and that count. A lane cannot run far ahead of the lanes
// it reads from, and the kernels' shuffles read every lane of the warp
// within a few dozen shuffles.
constexpr unsigned RING = 256;
struct Lane {
    unsigned gen = 0;
    uint64_t val[RING];
};

static SyncBar bar;
static std::vector<Lane> lanes;

static void __syncthreads() { bar.wait(); }

template <typename T> static T shfl_from(T v, unsigned src) {
    static_assert(sizeof(T) <= 8);
    unsigned warp = threadIdx.x / 32;
    unsigned g = cur->shuffles++;
    Lane& me = lanes[threadIdx.x];
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof v);
    me.val[g % RING] = bits;
    me.gen = g + 1;
    events++;
    Lane& other = lanes[warp * 32 + (src & 31)];
    while (other.gen < g + 1) yield_();
    bits = other.val[g % RING];
    T r;
    std::memcpy(&r, &bits, sizeof r);
    return r;
}

template <typename T> static T __shfl_xor_sync(unsigned, T v, int mask) { return shfl_from(v, (threadIdx.x & 31) ^ mask); }
template <typename T> static T __shfl_sync(unsigned, T v, int src) { return shfl_from(v, src); }

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#include "kernels.cpp"
#undef __shared__

// An invoker unpacks the parameter slots by the kernel's own C signature:
// pointers are device addresses, ints and floats the low 4 bytes.
typedef std::function<void(const uint64_t*)> Invoker;

template <typename T> static T slot(uint64_t v) {
    if constexpr (std::is_pointer_v<T>)
        return reinterpret_cast<T>(v);
    else if constexpr (std::is_same_v<T, float>)
        return std::bit_cast<float>((uint32_t)v);
    else if constexpr (sizeof(T) == 4)
        return (T)(uint32_t)v;
    else
        return (T)v;
}

template <typename... A> static Invoker invoker(void (*f)(A...)) {
    return [f](const uint64_t* s) {
        [&]<size_t... I>(std::index_sequence<I...>) { f(slot<A>(s[I])...); }(std::index_sequence_for<A...>{});
    };
}

#define K(name) {#name, invoker(name)}
#define W(s) K(matvec_##s), K(dequant_##s), K(embed_##s)

static const std::map<std::string, Invoker> kernels = {
    W(f32), W(f16), W(bf16), W(q4_1), W(q5_0), W(q5_1), W(q4_0r), W(q8_0r), W(q4_k), W(q5_k), W(q6_k),
    K(actq8a), K(actq8k), K(rmsnorm), K(add), K(addrows), K(swiglu), K(rope), K(tohalf), K(store),
    K(attention), K(attn_tiled), K(attn_split), K(attn_combine), K(gather),
};

static std::vector<char> readFile(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}

int main(int argc, char** argv) {
    if (argc < 10 || (argc - 10) % 3 != 0) {
        std::fprintf(stderr, "usage: driver KERNEL GX GY GZ BX BY BZ SHARED SLOTS [ADDR SIZE FILE]...\n");
        return 2;
    }
    auto k = kernels.find(argv[1]);
    if (k == kernels.end()) {
        std::fprintf(stderr, "no kernel %s\n", argv[1]);
        return 2;
    }
    unsigned g[3], n[3];
    for (int i = 0; i < 3; i++) {
        g[i] = std::stoul(argv[2 + i]);
        n[i] = std::stoul(argv[5 + i]);
    }
    if (std::stoul(argv[8]) > sizeof emu_dyn_shared) {
        std::fprintf(stderr, "%s bytes of dynamic shared memory\n", argv[8]);
        return 2;
    }
    uint64_t slots[16] = {};
    {
        std::string s = argv[9];
        size_t pos = 0;
        for (int i = 0; i < 16 && pos <= s.size(); i++) {
            size_t end = s.find(',', pos);
            if (end == std::string::npos) end = s.size();
            slots[i] = std::stoull(s.substr(pos, end - pos), nullptr, 16);
            pos = end + 1;
        }
    }
    struct Region {
        char* p;
        size_t size;
        std::string path;
    };
    std::vector<Region> regions;
    long page = 4096;
    for (int i = 10; i < argc; i += 3) {
        uint64_t addr = std::stoull(argv[i], nullptr, 16);
        size_t size = std::stoull(argv[i + 1]);
        size_t mapped = (size + page - 1) / page * page;
        void* p = mmap((void*)addr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (p != (void*)addr) {
            std::fprintf(stderr, "map %zu bytes at %llx: failed\n", size, (unsigned long long)addr);
            return 2;
        }
        std::vector<char> data = readFile(argv[i + 2]);
        if (data.size() != size) {
            std::fprintf(stderr, "%s: %zu bytes, want %zu\n", argv[i + 2], data.size(), size);
            return 2;
        }
        std::memcpy(p, data.data(), size);
        regions.push_back({(char*)p, size, argv[i + 2]});
    }
    gridDim = {g[0], g[1], g[2]};
    blockDim = {n[0], n[1], n[2]};
    unsigned nt = n[0] * n[1] * n[2];
    if (n[1] != 1 || n[2] != 1 || nt % 32 != 0 || nt > 1024) {
        std::fprintf(stderr, "block of %u×%u×%u threads: want whole warps in x\n", n[0], n[1], n[2]);
        return 2;
    }
    // One coroutine per CUDA thread, the blocks of the grid one after
    // another; threads are resumed in turn until all have left the kernel.
    lanes = std::vector<Lane>(nt);
    std::vector<Fiber> fibers(nt);
    const size_t stackSize = 256 * 1024;
    std::vector<std::unique_ptr<char[]>> stacks;
    for (unsigned t = 0; t < nt; t++) stacks.emplace_back(new char[stackSize]);
    static const Invoker* run;
    static const uint64_t* args;
    run = &k->second;
    args = slots;
    unsigned nblocks = g[0] * g[1] * g[2];
    for (unsigned b = 0; b < nblocks; b++) {
        blockIdx = {b % g[0], b / g[0] % g[1], b / (g[0] * g[1])};
        bar = SyncBar{int(nt), 0, 0};
        for (auto& l : lanes) l.gen = 0;
        for (unsigned t = 0; t < nt; t++) {
            Fiber& f = fibers[t];
            f.tid = t;
            f.shuffles = 0;
            f.done = false;
            getcontext(&f.ctx);
            f.ctx.uc_stack.ss_sp = stacks[t].get();
            f.ctx.uc_stack.ss_size = stackSize;
            f.ctx.uc_link = &sched;
            makecontext(&f.ctx, (void (*)())+[] {
                (*run)(args);
                cur->done = true;
                bar.leave();
            }, 0);
        }
        for (unsigned live = nt; live > 0;) {
            unsigned long before = events;
            for (auto& f : fibers) {
                if (f.done) continue;
                cur = &f;
                threadIdx = {f.tid, 0, 0};
                swapcontext(&sched, &f.ctx);
                if (f.done) live--;
            }
            if (live > 0 && events == before) {
                std::fprintf(stderr, "%s: block (%u,%u,%u): deadlock: %u threads wait for ever\n", argv[1], blockIdx.x,
                             blockIdx.y, blockIdx.z, live);
                return 3;
            }
        }
    }
    for (auto& r : regions) std::ofstream(r.path, std::ios::binary).write(r.p, r.size);
    return 0;
}
