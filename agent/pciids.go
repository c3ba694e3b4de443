package agent

// A small table of the PCI devices that matter on GPU servers, so the
// inventory reads well without shipping the 1.3 MB pci.ids in the
// initramfs. Unknown devices keep their numeric IDs; the service can name
// them later. IDs from the PCI ID repository (pci-ids.ucw.cz).
var pciVendors = map[string]string{
	"10de": "NVIDIA",
	"15b3": "Mellanox (NVIDIA)",
	"8086": "Intel",
	"1022": "AMD",
	"1002": "AMD/ATI",
	"14e4": "Broadcom",
	"144d": "Samsung",
	"1e0f": "KIOXIA",
	"15b7": "Western Digital",
	"1c5c": "SK hynix",
	"1af4": "Red Hat (virtio)",
	"1b36": "Red Hat (QEMU)",
	"1234": "QEMU",
	"102b": "Matrox",
	"1a03": "ASPEED",
	"1000": "Broadcom/LSI",
	"1d0f": "Amazon",
}

var pciDevices = map[string]string{
	// NVIDIA accelerators
	"10de:2330": "H100 SXM5 80GB",
	"10de:2331": "H100 PCIe 80GB",
	"10de:2321": "H100 NVL",
	"10de:2335": "H200 SXM 141GB",
	"10de:233b": "H200 NVL",
	"10de:2901": "B200",
	"10de:20b0": "A100 SXM4 40GB",
	"10de:20b2": "A100 SXM4 80GB",
	"10de:20b5": "A100 PCIe 80GB",
	"10de:20f1": "A100 PCIe 40GB",
	"10de:26b9": "L40S",
	"10de:26b5": "L40",
	"10de:22a3": "NVSwitch (H100)",
	"10de:1af1": "NVSwitch (A100)",
	// NVIDIA networking
	"15b3:101b": "ConnectX-6",
	"15b3:101d": "ConnectX-6 Dx",
	"15b3:101f": "ConnectX-6 Lx",
	"15b3:1021": "ConnectX-7",
	"15b3:1023": "ConnectX-8",
	"15b3:a2dc": "BlueField-3",
	"15b3:a2d6": "BlueField-2",
	"15b3:c2d5": "BlueField-3 management",
	// Intel Ethernet
	"8086:1572": "X710 10GbE SFP+",
	"8086:1583": "XL710 40GbE QSFP+",
	"8086:158b": "XXV710 25GbE SFP28",
	"8086:1593": "E810-C 4x25GbE",
	"8086:159b": "E810-XXV 25GbE",
	"8086:1521": "I350 1GbE",
	"8086:1533": "I210 1GbE",
	"8086:10fb": "82599ES 10GbE",
	"8086:100e": "82540EM 1GbE (e1000)",
	"8086:10d3": "82574L 1GbE (e1000e)",
	"8086:1563": "X550 10GbE",
	// Broadcom Ethernet
	"14e4:16d7": "BCM57414 25GbE",
	"14e4:1750": "BCM57508 100GbE",
	"14e4:1751": "BCM57504 25GbE",
	"14e4:165f": "BCM5720 1GbE",
	// NVMe
	"144d:a80a": "PM9A3 NVMe",
	"144d:a824": "PM1733/PM1735 NVMe",
	"144d:a808": "PM981/970 EVO NVMe",
	"1e0f:0007": "CD6/CM6 NVMe",
	"1e0f:0011": "CD8 NVMe",
	"8086:0b60": "D7-P5510/P5520 NVMe",
	"8086:0a54": "P4510 NVMe",
	"15b7:2741": "SN650 NVMe",
	"1b36:0010": "QEMU NVMe controller",
	// virtio and QEMU
	"1af4:1000": "virtio network (legacy)",
	"1af4:1001": "virtio block (legacy)",
	"1af4:1041": "virtio network",
	"1af4:1042": "virtio block",
	"8086:1237": "440FX host bridge",
	"8086:7000": "PIIX3 ISA bridge",
	"8086:7010": "PIIX3 IDE",
	"8086:7113": "PIIX4 ACPI",
	"1234:1111": "QEMU VGA",
	"8086:29c0": "Q35 host bridge",
	"8086:2922": "ICH9 AHCI",
	// BMC video
	"1a03:2000": "AST2500/AST2600 VGA",
}

// gpuIDs are accelerators from vendors that also make non-accelerator
// display devices (AMD, Intel); NVIDIA display/3D devices all count.
var gpuIDs = map[string]bool{
	"1002:74a1": true, // MI300X
	"1002:740f": true, // MI210
}

func pciName(vendor, device string) (string, string) {
	v := pciVendors[vendor]
	n := pciDevices[vendor+":"+device]
	if n != "" && v != "" {
		// Prefix the vendor where the name alone would be ambiguous in a
		// report ("H100 SXM5 80GB" -> "NVIDIA H100 SXM5 80GB").
		switch vendor {
		case "10de":
			n = "NVIDIA " + n
		case "15b3":
			n = "NVIDIA " + n
		}
	}
	return v, n
}
