"""The virtual Android device: an ADB protocol endpoint on loopback that runs commands on the host.

It stands in for a phone in tests, demos and dry runs. See ``docs/devices.md``.

Rooms: :mod:`.server` (``VirtualDevice``: start, stop, faults), :mod:`.connection` and
:mod:`.streams` (handshake, routing, flow control), :mod:`.wire` and :mod:`.auth` (the ADB
transport and RSA keys), :mod:`.shell_service` and :mod:`.sync_service` (what a stream runs),
:mod:`.state` (``DeviceState`` and ``FaultPlan``), :mod:`.shell` (the command interpreter),
:mod:`.runner` (the host ``executor_runner``), :mod:`.fs`, :mod:`.logcat`, :mod:`.profiles`.
"""

from android_bench.virtual.auth import load_authorized_keys, parse_adb_public_key
from android_bench.virtual.profiles import Profile, ProfileError, list_profiles, load_profile
from android_bench.virtual.server import VirtualDevice
from android_bench.virtual.state import FaultPlan

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
