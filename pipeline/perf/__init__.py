"""Speed and memory (optional): `make bench` (bench.py) and the GPU check (gpu_check.py, scripts/gpu-check.sh)."""
