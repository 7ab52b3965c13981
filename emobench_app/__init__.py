"""The app layer: orchestration that crosses packages (the demo, ``evaluate`` on a manifest) and its commands.

It sits on top of the layers (emobench_common <- training <- export <- device_results <- android_bench
<- emobench_app): it may import every package, and no package imports it.
"""
