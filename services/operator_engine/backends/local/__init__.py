"""The local backend: each stage a process on this machine.

`backend.py` runs the stages; `pod_launcher.py` starts pod_config and
pod_publish; `sandbox.py` runs the algorithm in bubblewrap, with the cgroup
limits of `cgroups.py` and the interpreter `runtimes.py` picks for its image.
Nothing is imported here: the pod launcher's helper process and the pods it
starts load only the modules they use.
"""
