package shaders

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEmbeddedSPIRVIsFresh recompiles every variant with glslc and requires the embedded bytes to
// equal the result, so a `.comp` edited without `make shaders` fails here.
func TestEmbeddedSPIRVIsFresh(t *testing.T) {
	needTool(t, "glslc", "glslc", "cannot check that the embedded SPIR-V is fresh")
	for _, v := range Variants {
		args := append([]string{}, GlslcArgs...)
		for _, d := range v.Defines {
			args = append(args, "-D"+d)
		}
		args = append(args, v.Source, "-o", "-")
		cmd := exec.Command("glslc", args...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		require.NoError(t, cmd.Run(), "glslc %s: %s", v.Name, errb.String())
		emb, err := SPIRV(v.Name)
		require.NoError(t, err)
		require.True(t, bytes.Equal(emb, out.Bytes()), "%s.spv is stale relative to %s: run make shaders", v.Name, v.Source)
	}
}

// TestEveryModuleIsListed requires each checked-in .spv to be a listed variant and each
// variant to be valid SPIR-V for Vulkan 1.1.
func TestEveryModuleIsListed(t *testing.T) {
	files, err := filepath.Glob("*.spv")
	require.NoError(t, err)
	listed := map[string]bool{}
	for _, v := range Variants {
		listed[v.Name] = true
	}
	for _, f := range files {
		require.True(t, listed[strings.TrimSuffix(f, ".spv")], "%s is not in Variants", f)
	}
	require.Len(t, files, len(Variants))
	needTool(t, "spirv-val", "spirv-tools", "cannot validate the SPIR-V")
	for _, v := range Variants {
		out, err := exec.Command("spirv-val", "--target-env", "vulkan1.1", v.Name+".spv").CombinedOutput()
		require.NoError(t, err, "%s: %s", v.Name, out)
	}
}

// needTool skips the test when tool is not on PATH — except under BITGPU_REQUIRE_GPU=1, as
// `make test` (CI) sets, where a missing tool fails the test instead of passing it unchecked.
func needTool(t *testing.T, tool, debPackage, why string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		msg := tool + " not installed (Debian package " + debPackage + "): " + why
		if os.Getenv("BITGPU_REQUIRE_GPU") == "1" {
			t.Fatal(msg + " (BITGPU_REQUIRE_GPU=1 requires every check to run)")
		}
		t.Skip(msg)
	}
}

func TestSPIRVUnknownName(t *testing.T) {
	_, err := SPIRV("no_such_kernel")
	require.ErrorContains(t, err, "no_such_kernel")
	_, err = os.Stat("copy.comp")
	require.NoError(t, err)
}
