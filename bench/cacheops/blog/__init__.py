# The small Django app of the cacheops workload (bench/cacheops/record.py).
