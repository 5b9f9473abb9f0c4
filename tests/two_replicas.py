"""Run a test helper in a process whose CPU is split into 2 logical devices.

``python tests/two_replicas.py <module>:<function> '<json list of args>' OUT.json``:
splits the CPU into 2 logical devices (before TensorFlow initialises), imports
``<module>`` (a test module on ``PYTHONPATH``, see ``conftest.subprocess_env``), calls
``<function>(*args)`` and writes its JSON-able result, with the number of logical CPUs under
``"logical_cpus"`` when the result is a dict, to ``OUT.json``.
"""
import importlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(target, args, path):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    module, function = target.split(":")
    result = getattr(importlib.import_module(module), function)(*json.loads(args))
    if isinstance(result, dict):
        result["logical_cpus"] = len(tf.config.list_logical_devices("CPU"))
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(*sys.argv[1:4])
