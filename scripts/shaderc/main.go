// Command shaderc compiles every variant in shaders.Variants from its GLSL source to SPIR-V with
// glslc and validates the result with spirv-val (target vulkan1.1). `make shaders` runs it from
// the repository root; it writes shaders/<name>.spv only when the bytes change. Arguments, when
// given, limit it to the variants compiled from those sources (e.g. `attention.comp`).
package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"

	"github.com/bitgpu/bitgpu/shaders"
)

func main() {
	if err := run("shaders", os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "shaderc:", err)
		os.Exit(1)
	}
}

func run(dir string, only []string) error {
	for _, v := range shaders.Variants {
		if len(only) > 0 && !slices.Contains(only, v.Source) {
			continue
		}
		args := append([]string{}, shaders.GlslcArgs...)
		for _, d := range v.Defines {
			args = append(args, "-D"+d)
		}
		args = append(args, v.Source, "-o", "-")
		cmd := exec.Command("glslc", args...)
		cmd.Dir = dir
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("glslc %s (%s): %v\n%s", v.Source, v.Name, err, errb.String())
		}
		path := filepath.Join(dir, v.Name+".spv")
		val := exec.Command("spirv-val", "--target-env", "vulkan1.1", "-")
		val.Stdin = bytes.NewReader(out.Bytes())
		if msg, err := val.CombinedOutput(); err != nil {
			return fmt.Errorf("spirv-val %s: %v\n%s", v.Name, err, msg)
		}
		old, _ := os.ReadFile(path)
		if bytes.Equal(old, out.Bytes()) {
			continue
		}
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", path)
	}
	return nil
}
