"""The kubernetes backend (C2D_ENGINE_BACKEND=kubernetes): each job's stages as pods.

objects.py  the job's objects as dicts (ComputeJob, claim, Secret, NetworkPolicy, pods)
outcomes.py a pod's state -> how its stage ended
watch.py    the engine's one pod watch
backend.py  the Backend the orchestrator drives
wiring.py   settings -> a backend and its API client
"""
