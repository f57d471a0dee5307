"""A package of workloads named by import strings (`wlpkg.workloads:tiny`) in the tests."""
