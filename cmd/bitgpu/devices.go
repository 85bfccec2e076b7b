//go:build cgo

package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bitgpu/bitgpu/gpu"
)

func init() {
	rootCmd.AddCommand(&cobra.Command{
		Use:   "devices",
		Short: "List Vulkan devices with their limits and features",
		Long: `List every Vulkan device the loader finds: type, driver, memory heaps, subgroup size,
compute limits and the optional features bitgpu uses. The device bitgpu picks by default
(discrete > integrated > virtual > CPU, or BITGPU_DEVICE=<index|name>) is marked "*".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			infos, err := gpu.Enumerate()
			if err != nil {
				return err
			}
			sel, err := gpu.Choose(infos, os.Getenv("BITGPU_DEVICE"))
			if err != nil {
				return err
			}
			printDevices(cmd.OutOrStdout(), infos, sel)
			return nil
		},
	})
}

// printDevices writes one block per device; sel is the index bitgpu would open.
func printDevices(w io.Writer, infos []gpu.Info, sel int) {
	for i, in := range infos {
		mark := " "
		if i == sel {
			mark = "*"
		}
		fmt.Fprintf(w, "%s [%d] %s\n", mark, in.Index, in.Name)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		row := func(k, format string, a ...any) { fmt.Fprintf(tw, "      %s\t%s\n", k, fmt.Sprintf(format, a...)) }
		row("type", "%s", in.Type)
		row("driver", "%s", strings.TrimSpace(in.Driver+" "+in.DriverInfo))
		row("api", "Vulkan %s, vendor 0x%04x, device 0x%04x", in.APIVersion, in.VendorID, in.DeviceID)
		for h, heap := range in.Heaps {
			kind := "host"
			if heap.DeviceLocal {
				kind = "device-local"
			}
			row(fmt.Sprintf("heap %d", h), "%s (%s)", gpu.FormatBytes(heap.Size), kind)
		}
		sg := fmt.Sprintf("%d", in.SubgroupSize)
		if in.Features.SubgroupSizeControl {
			sg += fmt.Sprintf(" (size control %d..%d)", in.MinSubgroupSize, in.MaxSubgroupSize)
		}
		row("subgroup", "%s", sg)
		row("workgroup", "max %dx%dx%d, %d invocations, %s shared memory", in.MaxWorkgroupSize[0], in.MaxWorkgroupSize[1], in.MaxWorkgroupSize[2], in.MaxWorkgroupInvocations, gpu.FormatBytes(uint64(in.MaxSharedMemory)))
		row("dispatch", "max %dx%dx%d workgroups", in.MaxWorkgroupCount[0], in.MaxWorkgroupCount[1], in.MaxWorkgroupCount[2])
		row("storage buffer", "max range %s, offset alignment %d B", gpu.FormatBytes(in.MaxStorageBufferRange), in.StorageBufferAlignment)
		row("push constants", "%d B", in.MaxPushConstantsSize)
		if in.TimestampValidBits > 0 {
			row("timestamps", "%g ns/tick, %d valid bits", in.TimestampPeriod, in.TimestampValidBits)
		} else {
			row("timestamps", "none on the compute queue")
		}
		row("features", "%s", featureList(in.Features))
		tw.Flush()
	}
}

// featureList names the optional features present ("-" for none).
func featureList(f gpu.Features) string {
	var names []string
	add := func(ok bool, name string) {
		if ok {
			names = append(names, name)
		}
	}
	add(f.Storage16Bit, "storage16")
	add(f.Storage8Bit, "storage8")
	add(f.Int8, "int8")
	add(f.Float16, "fp16")
	add(f.Int16, "int16")
	add(f.Int64, "int64")
	add(f.IntegerDotProduct, "dot4x8")
	add(f.Dot4x8Accelerated, "dot4x8-accelerated")
	add(f.SubgroupSizeControl, "subgroup-size-control")
	add(f.SubgroupArithmetic, "subgroup-arithmetic")
	add(f.SubgroupShuffle, "subgroup-shuffle")
	if len(names) == 0 {
		return "-"
	}
	return strings.Join(names, " ")
}
