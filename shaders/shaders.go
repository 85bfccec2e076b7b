// Package shaders holds bitgpu's compute kernels: one GLSL `.comp` file per kernel, the SPIR-V
// compiled from it (checked in, embedded with go:embed) and the table of variants below. Nothing
// compiles GLSL at run time: `make shaders` regenerates every `.spv` with glslc (target vulkan1.1)
// and validates it with spirv-val; a test fails when a checked-in `.spv` is stale.
package shaders

import (
	"embed"
	"fmt"
)

//go:embed *.spv
var spv embed.FS

// Variant is one compiled SPIR-V module: Name (the `.spv` file without extension) compiled from
// Source with the preprocessor Defines. A kernel has several variants when a device feature
// changes its code (e.g. subgroup arithmetic versus a shared-memory fallback).
type Variant struct {
	Name    string
	Source  string
	Defines []string
}

// Variants lists every SPIR-V module bitgpu ships. `make shaders` compiles exactly these.
var Variants = []Variant{
	{Name: "copy", Source: "copy.comp"},
	{Name: "add", Source: "add.comp"},
	{Name: "scale", Source: "scale.comp"},
	{Name: "reduce_sum_subgroup", Source: "reduce_sum.comp", Defines: []string{"USE_SUBGROUP=1"}},
	{Name: "reduce_sum_shared", Source: "reduce_sum.comp", Defines: []string{"USE_SUBGROUP=0"}},
	{Name: "rmsnorm", Source: "rmsnorm.comp", Defines: []string{"QUANT=0"}},
	{Name: "rmsnorm_quant", Source: "rmsnorm.comp", Defines: []string{"QUANT=1"}},
	{Name: "quantize", Source: "rmsnorm.comp", Defines: []string{"QUANT=1", "NORM=0"}},
	{Name: "ternary_matmul_dot", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=1", "USE_SUBGROUP=1"}},
	{Name: "ternary_matmul_subgroup", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=1"}},
	{Name: "ternary_matmul_shared", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=0"}},
	{Name: "ternary_matmul_rope_dot", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=1", "USE_SUBGROUP=1", "ROPE=1"}},
	{Name: "ternary_matmul_rope_subgroup", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=1", "ROPE=1"}},
	{Name: "ternary_matmul_rope_shared", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=0", "ROPE=1"}},
	{Name: "ternary_matmul_norm_dot", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=1", "USE_SUBGROUP=1", "NORMQ=1"}},
	{Name: "ternary_matmul_norm_subgroup", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=1", "NORMQ=1"}},
	{Name: "ternary_matmul_norm_shared", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=0", "NORMQ=1"}},
	{Name: "ternary_matmul_rope_norm_dot", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=1", "USE_SUBGROUP=1", "ROPE=1", "NORMQ=1"}},
	{Name: "ternary_matmul_rope_norm_subgroup", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=1", "ROPE=1", "NORMQ=1"}},
	{Name: "ternary_matmul_rope_norm_shared", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=0", "ROPE=1", "NORMQ=1"}},
	{Name: "ternary_matmul_dot_packed", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=1", "USE_SUBGROUP=1", "PACKED=1"}},
	{Name: "ternary_matmul_subgroup_packed", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=1", "PACKED=1"}},
	{Name: "ternary_matmul_shared_packed", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=0", "PACKED=1"}},
	{Name: "ternary_matmul_rope_dot_packed", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=1", "USE_SUBGROUP=1", "ROPE=1", "PACKED=1"}},
	{Name: "ternary_matmul_rope_subgroup_packed", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=1", "ROPE=1", "PACKED=1"}},
	{Name: "ternary_matmul_rope_shared_packed", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=0", "ROPE=1", "PACKED=1"}},
	{Name: "ternary_matmul_norm_dot_packed", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=1", "USE_SUBGROUP=1", "NORMQ=1", "PACKED=1"}},
	{Name: "ternary_matmul_norm_subgroup_packed", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=1", "NORMQ=1", "PACKED=1"}},
	{Name: "ternary_matmul_norm_shared_packed", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=0", "NORMQ=1", "PACKED=1"}},
	{Name: "ternary_matmul_rope_norm_dot_packed", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=1", "USE_SUBGROUP=1", "ROPE=1", "NORMQ=1", "PACKED=1"}},
	{Name: "ternary_matmul_rope_norm_subgroup_packed", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=1", "ROPE=1", "NORMQ=1", "PACKED=1"}},
	{Name: "ternary_matmul_rope_norm_shared_packed", Source: "ternary_matmul.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=0", "ROPE=1", "NORMQ=1", "PACKED=1"}},
	{Name: "f16_matvec_subgroup", Source: "f16_matvec.comp", Defines: []string{"USE_SUBGROUP=1"}},
	{Name: "f16_matvec_shared", Source: "f16_matvec.comp", Defines: []string{"USE_SUBGROUP=0"}},
	{Name: "q8_matvec_dot", Source: "q8_matvec.comp", Defines: []string{"USE_DOT=1", "USE_SUBGROUP=1"}},
	{Name: "q8_matvec_subgroup", Source: "q8_matvec.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=1"}},
	{Name: "q8_matvec_shared", Source: "q8_matvec.comp", Defines: []string{"USE_DOT=0", "USE_SUBGROUP=0"}},
	{Name: "rope_kv", Source: "rope_kv.comp"},
	{Name: "glu", Source: "glu.comp"},
	{Name: "argmax", Source: "argmax.comp"},
	{Name: "embed_gather", Source: "embed_gather.comp"},
	{Name: "topk", Source: "topk.comp"},
	{Name: "numerics_check", Source: "numerics_check.comp"},
}

// GlslcArgs are the glslc flags every variant is compiled with (before its -D defines).
var GlslcArgs = []string{"--target-env=vulkan1.1", "-O", "-I."}

// SPIRV returns the embedded module of the named variant, or an error naming it.
func SPIRV(name string) ([]byte, error) {
	b, err := spv.ReadFile(name + ".spv")
	if err != nil {
		return nil, fmt.Errorf("shader %q is not embedded (run make shaders)", name)
	}
	return b, nil
}
