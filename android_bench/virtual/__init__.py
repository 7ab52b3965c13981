"""The virtual Android device: an ADB protocol endpoint on loopback that runs commands on the host.

It stands in for a phone in tests, demos and dry runs. See ``docs/README-device.md``.
"""

from android_bench.virtual.profiles import Profile, ProfileError, list_profiles, load_profile
from android_bench.virtual.server import FaultPlan, VirtualDevice, load_authorized_keys, parse_adb_public_key

__all__ = [
    "FaultPlan",
    "Profile",
    "ProfileError",
    "VirtualDevice",
    "list_profiles",
    "load_authorized_keys",
    "load_profile",
    "parse_adb_public_key",
]
