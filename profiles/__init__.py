"""Hardware spec data, shipped inside the package as ``amp_advisor.profiles``.

The TOML files here are the data; this file only makes the folder importable as a package so
that ``importlib.resources`` finds the files in a wheel as well as in a source checkout.
"""
