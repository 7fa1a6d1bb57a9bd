"""Hardware classes a model can be deployed to, with the figures the rest of TinyFleet plans with.

Figures come from vendor datasheets (see docs/hardware.md for the sources); currents are typical
values at the stated supply voltage. ``host_slowdown`` scales an inference time measured on the
build machine (x86-64, one core) to the target, so simulated devices spend realistic energy; it is
an estimate from clock rate and ISA, documented as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Runtime = Literal["tflm", "litert"]
Variant = Literal["float32", "float16", "dynamic_int8", "full_int8"]

KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    description: str
    runtime: Runtime
    cpu_mhz: int
    ram_bytes: int
    flash_bytes: int
    # What the model may use: the rest belongs to the firmware/OS, the agent and the radio stack.
    model_ram_budget_bytes: int
    model_flash_budget_bytes: int  # one OTA slot
    supported_variants: tuple[Variant, ...]
    # Variants in order of preference when several fit (first fitting one is the default).
    preferred_variants: tuple[Variant, ...]
    supply_volts: float
    active_ma: float
    sleep_ma: float
    radio_tx_ma: float
    radio_bytes_per_s: float
    battery_mah: float
    host_slowdown: float


CORTEX_M4F = HardwareProfile(
    name="cortex-m4f",
    description="Cortex-M4F MCU, 64 MHz, 256 KB RAM, 1 MB flash (nRF52840-class)",
    runtime="tflm",
    cpu_mhz=64,
    ram_bytes=256 * KIB,
    flash_bytes=1 * MIB,
    model_ram_budget_bytes=160 * KIB,
    model_flash_budget_bytes=384 * KIB,
    supported_variants=("full_int8",),
    preferred_variants=("full_int8",),
    supply_volts=3.0,
    active_ma=3.3,  # nRF52840 PS: CPU running CoreMark from flash, DC/DC, 64 MHz
    sleep_ma=0.0015,  # System ON, RTC running, full RAM retention (~1.5 uA)
    radio_tx_ma=4.8,  # BLE radio TX at 0 dBm, DC/DC
    radio_bytes_per_s=125_000 / 8,  # ~1 Mbps BLE PHY, ~125 kbps application throughput
    battery_mah=1000.0,
    host_slowdown=300.0,
)

ESP32_S3 = HardwareProfile(
    name="esp32-s3",
    description="ESP32-S3 MCU, 240 MHz dual core, 512 KB SRAM, 8 MB flash (WROOM-1 N8 module)",
    runtime="tflm",
    cpu_mhz=240,
    ram_bytes=512 * KIB,
    flash_bytes=8 * MIB,
    model_ram_budget_bytes=320 * KIB,
    model_flash_budget_bytes=2 * MIB,
    supported_variants=("full_int8",),
    preferred_variants=("full_int8",),
    supply_volts=3.3,
    active_ma=40.0,  # ESP32-S3 datasheet: modem-sleep, 240 MHz, one core busy (~40 mA)
    sleep_ma=0.24,  # light sleep
    radio_tx_ma=283.0,  # Wi-Fi 802.11n TX at full power
    radio_bytes_per_s=1_000_000 / 8,
    battery_mah=2000.0,
    host_slowdown=60.0,
)

PI_ZERO_2W = HardwareProfile(
    name="pi-zero-2w",
    description="Raspberry Pi Zero 2 W, quad Cortex-A53 1 GHz, 512 MB RAM, microSD",
    runtime="litert",
    cpu_mhz=1000,
    ram_bytes=512 * MIB,
    flash_bytes=16 * 1024 * MIB,
    model_ram_budget_bytes=64 * MIB,
    model_flash_budget_bytes=64 * MIB,
    supported_variants=("float32", "float16", "dynamic_int8", "full_int8"),
    preferred_variants=("full_int8", "dynamic_int8", "float16", "float32"),
    supply_volts=5.0,
    active_ma=350.0,  # Raspberry Pi docs: typical bare-board active current
    sleep_ma=100.0,  # idle; the Pi has no deep sleep
    radio_tx_ma=120.0,  # extra current while Wi-Fi transmits
    radio_bytes_per_s=2_000_000 / 8,
    battery_mah=10_000.0,
    host_slowdown=8.0,
)

PI_4 = HardwareProfile(
    name="pi-4",
    description="Raspberry Pi 4 Model B, quad Cortex-A72 1.5 GHz, 2 GB RAM, microSD",
    runtime="litert",
    cpu_mhz=1500,
    ram_bytes=2048 * MIB,
    flash_bytes=32 * 1024 * MIB,
    model_ram_budget_bytes=256 * MIB,
    model_flash_budget_bytes=256 * MIB,
    supported_variants=("float32", "float16", "dynamic_int8", "full_int8"),
    preferred_variants=("full_int8", "dynamic_int8", "float16", "float32"),
    supply_volts=5.0,
    active_ma=600.0,  # Raspberry Pi docs: typical bare-board active current, Pi 4B
    sleep_ma=540.0,  # idle, HDMI off
    radio_tx_ma=150.0,
    radio_bytes_per_s=10_000_000 / 8,
    battery_mah=20_000.0,
    host_slowdown=3.0,
)

PROFILES: dict[str, HardwareProfile] = {p.name: p for p in (CORTEX_M4F, ESP32_S3, PI_ZERO_2W, PI_4)}


def get_profile(name: str) -> HardwareProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown hardware class {name!r}; known: {', '.join(sorted(PROFILES))}") from None
