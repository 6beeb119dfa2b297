"""jobkit's benchmarks: each runs jobkit and a bare baseline in the same run.

``python -m benchmarks`` runs them all; ``python -m benchmarks.<name>`` one.
See the README's "Performance" section.
"""
