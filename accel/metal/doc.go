// Package metal is the compute backend on Apple GPUs: accel.Backend over
// Metal, called through purego without cgo.
//
// UNTESTED ON HARDWARE: it was written and cross-compiled on Linux, and no
// Metal device has run it. What has run: the kernels of kernels.metal
// compiled as C++ and executed by an emulator (testdata/driver.cpp: one
// CPU thread per GPU thread, simdgroup and threadgroup operations
// emulated), driven by this package's Go code and compared with accel/cpu
// op by op; and the Linux tests of the pure-Go parts. Metal's own
// compiler, the Objective-C calls (metal_darwin.go, objc_darwin.go) and
// real GPU scheduling have not been exercised. On a Mac the same tests
// run on the device.
//
// It needs macOS 13 or later (Metal Shading Language 3.0) and a GPU that
// runs 32-wide SIMD groups (Apple silicon); New says why otherwise.
//
// Buffers are shared-storage MTLBuffers, so Write and Read are copies of
// host memory. Operations are encoded into one command buffer, which is
// committed and waited for before the host touches buffer memory again
// (Write, Read, WriteCache, attention observers) and at Close. Compute
// methods have no error result: a failed command buffer, or arguments
// that would make a kernel read out of bounds, are recorded, the
// operation is skipped, and the error is returned by Err (accel.Checker:
// the engine checks it after every step) and by the next Alloc,
// AllocCache, Load or Close.
//
// The matrix products follow the CPU backend's arithmetic: activations are
// quantized to the CPU's 8-bit grids (Q8A per 32 values for q4_0, q4_1,
// q5_0, q5_1 and q8_0 weights; Q8_K per 256 for q4_K, q5_K and q6_K) and
// multiplied by the weights' integer quants block by block, so results
// agree with accel/cpu's within float rounding. Other weight types (bf16,
// q2_K, q3_K) are refused by Load.
package metal
