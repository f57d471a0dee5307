"""The machine simulator for the tuner: the real Tuner, unchanged, against landscapes.

    landscape.py  what is true of a workload on a machine, per configuration
    noise.py      the noise a real machine makes
    machine.py    SimulatedMachine: the worker's interface, answered from a landscape
    profiles.py   the devices, as the probe sees them (from fakes)
    families.py   measured, parametric and adversarial landscapes
    run.py        one simulated tune, scored: quality = true speed of the recommendation / true best

Used by tests/test_tuner_sim.py (a fixed, seeded set) and benchmarks/bench_tuner_sim.py (hundreds).
"""

from .families import suite
from .landscape import Landscape, Point
from .machine import SimulatedMachine
from .noise import Noise
from .run import Outcome, simulate

__all__ = ["Landscape", "Noise", "Outcome", "Point", "SimulatedMachine", "simulate", "suite"]
