package main

import (
	"fmt"
	goruntime "runtime"
	"runtime/debug"
	"strings"

	"github.com/bitgpu/bitgpu"
)

// version is bitgpu's release; `go build -ldflags "-X main.version=1.2.3"` sets it for a release.
var version = "0.5.0-dev"

// versionString is what `bitgpu --version` prints: the version, then the commit (from the Go
// build's VCS stamp, "+dirty" when the tree had changes), the Go version, the build tags, whether
// cgo (and so the Vulkan backend) is in, and the OS/architecture.
func versionString() string {
	commit, tags, cgo := "unknown", "none", "?"
	if bi, ok := debug.ReadBuildInfo(); ok {
		var dirty bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
				if len(commit) > 12 {
					commit = commit[:12]
				}
			case "vcs.modified":
				dirty = s.Value == "true"
			case "-tags":
				if s.Value != "" {
					tags = strings.ReplaceAll(s.Value, ",", " ")
				}
			case "CGO_ENABLED":
				cgo = s.Value
			}
		}
		if dirty {
			commit += "+dirty"
		}
	}
	vulkan := "with the Vulkan backend"
	if !bitgpu.HaveVulkan() {
		vulkan = "without the Vulkan backend"
	}
	return fmt.Sprintf("bitgpu %s (commit %s, %s, %s/%s, tags: %s, CGO_ENABLED=%s, %s)",
		version, commit, goruntime.Version(), goruntime.GOOS, goruntime.GOARCH, tags, cgo, vulkan)
}

func init() {
	rootCmd.Version = version
	rootCmd.SetVersionTemplate("{{.Version}}\n")
	// The full string needs the other init functions (newGPUBackend); cobra reads Version late.
	cobraInitVersion = func() { rootCmd.Version = versionString() }
}

// cobraInitVersion fills rootCmd.Version just before the command line runs (see run).
var cobraInitVersion func()
