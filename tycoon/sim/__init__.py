"""The market simulator: equilibrium and dynamic modes over the real allocation and Best
Response cores, with measures and plots (``tycoon sim``; see ``docs/simulator.md``)."""
