//go:build darwin

package metal

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
	"github.com/ebitengine/purego/objc"
)

// The Objective-C side: the frameworks, the classes and selectors the
// backend sends, and the helpers around autorelease pools, strings and
// errors.

const (
	foundationPath   = "/System/Library/Frameworks/Foundation.framework/Foundation"
	coreGraphicsPath = "/System/Library/Frameworks/CoreGraphics.framework/CoreGraphics"
	metalPath        = "/System/Library/Frameworks/Metal.framework/Metal"

	languageVersion3_0   = 0x30000 // MTLLanguageVersion3_0 (macOS 13)
	storageModeShared    = 0       // MTLResourceStorageModeShared, default hazard tracking
	commandBufferErrored = 5       // MTLCommandBufferStatusError
)

// mtlSize is MTLSize: three NSUIntegers, passed by value.
type mtlSize struct{ W, H, D uint }

var (
	loadOnce sync.Once
	loadErr  error
	// createDevice is MTLCreateSystemDefaultDevice; it returns a retained
	// device, or nil.
	createDevice func() objc.ID

	classPool, classString, classCompileOptions objc.ID
)

var (
	selAlloc                   = objc.RegisterName("alloc")
	selInit                    = objc.RegisterName("init")
	selNew                     = objc.RegisterName("new")
	selDrain                   = objc.RegisterName("drain")
	selRetain                  = objc.RegisterName("retain")
	selRelease                 = objc.RegisterName("release")
	selStringWithUTF8String    = objc.RegisterName("stringWithUTF8String:")
	selUTF8String              = objc.RegisterName("UTF8String")
	selLocalizedDescription    = objc.RegisterName("localizedDescription")
	selName                    = objc.RegisterName("name")
	selNewCommandQueue         = objc.RegisterName("newCommandQueue")
	selSetLanguageVersion      = objc.RegisterName("setLanguageVersion:")
	selSetFastMathEnabled      = objc.RegisterName("setFastMathEnabled:")
	selNewLibrary              = objc.RegisterName("newLibraryWithSource:options:error:")
	selNewFunctionWithName     = objc.RegisterName("newFunctionWithName:")
	selNewPipeline             = objc.RegisterName("newComputePipelineStateWithFunction:error:")
	selMaxThreads              = objc.RegisterName("maxTotalThreadsPerThreadgroup")
	selThreadExecutionWidth    = objc.RegisterName("threadExecutionWidth")
	selNewBufferWithLength     = objc.RegisterName("newBufferWithLength:options:")
	selContents                = objc.RegisterName("contents")
	selCommandBuffer           = objc.RegisterName("commandBuffer")
	selComputeCommandEncoder   = objc.RegisterName("computeCommandEncoder")
	selSetComputePipelineState = objc.RegisterName("setComputePipelineState:")
	selSetBuffer               = objc.RegisterName("setBuffer:offset:atIndex:")
	selSetBytes                = objc.RegisterName("setBytes:length:atIndex:")
	selDispatchThreadgroups    = objc.RegisterName("dispatchThreadgroups:threadsPerThreadgroup:")
	selEndEncoding             = objc.RegisterName("endEncoding")
	selCommit                  = objc.RegisterName("commit")
	selWaitUntilCompleted      = objc.RegisterName("waitUntilCompleted")
	selStatus                  = objc.RegisterName("status")
	selError                   = objc.RegisterName("error")
)

// loadFrameworks opens Metal once. CoreGraphics is opened too: without it
// MTLCreateSystemDefaultDevice returns nil in a process that is not an
// app, such as a daemon.
func loadFrameworks() error {
	loadOnce.Do(func() {
		for _, path := range []string{foundationPath, coreGraphicsPath} {
			if _, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL); err != nil {
				loadErr = fmt.Errorf("metal: not available: %w", err)
				return
			}
		}
		lib, err := purego.Dlopen(metalPath, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			loadErr = fmt.Errorf("metal: not available: %w", err)
			return
		}
		sym, err := purego.Dlsym(lib, "MTLCreateSystemDefaultDevice")
		if err != nil {
			loadErr = fmt.Errorf("metal: not available: %w", err)
			return
		}
		purego.RegisterFunc(&createDevice, sym)
		classPool = objc.ID(objc.GetClass("NSAutoreleasePool"))
		classString = objc.ID(objc.GetClass("NSString"))
		classCompileOptions = objc.ID(objc.GetClass("MTLCompileOptions"))
		if classPool == 0 || classString == 0 || classCompileOptions == 0 {
			loadErr = errors.New("metal: not available: Foundation or Metal classes missing")
		}
	})
	return loadErr
}

// pushPool starts an autorelease pool for the Objective-C calls of one
// operation, locking the goroutine to its thread: a pool must be drained
// on the thread that made it. Use it as defer popPool(pushPool()).
func pushPool() objc.ID {
	runtime.LockOSThread()
	return classPool.Send(selAlloc).Send(selInit)
}

// popPool drains the pool, releasing the autoreleased objects made since
// pushPool, and unlocks the thread.
func popPool(pool objc.ID) {
	pool.Send(selDrain)
	runtime.UnlockOSThread()
}

// nsString makes an autoreleased NSString of s.
func nsString(s string) objc.ID { return classString.Send(selStringWithUTF8String, s) }

// goString copies an NSString.
func goString(s objc.ID) string {
	if s == 0 {
		return ""
	}
	return objc.Send[string](s, selUTF8String)
}

// nsError turns an NSError into a Go error with its localized description.
func nsError(e objc.ID) error {
	if e == 0 {
		return errors.New("unknown error")
	}
	return errors.New(goString(e.Send(selLocalizedDescription)))
}

// contents is the CPU address of a shared-storage buffer.
func contents(buf objc.ID) unsafe.Pointer { return objc.Send[unsafe.Pointer](buf, selContents) }
