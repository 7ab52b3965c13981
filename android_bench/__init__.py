"""Android benchmarking: device access over adb, the virtual device, runners and the ablation."""
