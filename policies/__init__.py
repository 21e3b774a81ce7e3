"""Bandit policies that pick a retrieval strategy (an arm) per question.

One job per module: ``arms`` (the arms and their indices), ``features`` (question ->
vector, with a fingerprint), ``rewards`` (quality minus lambda x cost), ``linucb``,
``thompson``, ``neural`` (bandits), ``baselines`` (fixed arm, supervised classifier,
oracle), ``persistence`` (versioned JSON + npz/safetensors), ``replay`` (offline
training/evaluation from the arm log), ``online`` (thread-safe online learner).
"""
