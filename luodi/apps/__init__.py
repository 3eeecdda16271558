"""Apps: train, evaluate, predict, tune and cross-validate an App YAML, and the runs they leave behind.

Import the verbs from `luodi.api` (the public face); the modules here read top to bottom: configs (which app),
train, predict, evaluate, cv (the k-fold loop), tune (searches via hpo), runs (list, promote), demo, and
registry (runs/<app>/<version>/ and the runs table).
"""
