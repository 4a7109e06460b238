"""One spec file per exercise: ``exNN_name.py`` defines ``EXERCISE`` for ``NN_name.ipynb``.

The grader discovers every file here that defines ``EXERCISE`` (``course_adv.grading.registry``),
so a new exercise is one new file here and one solution notebook under ``solutions/``. A spec
holds the exercise's public cases, how to make their inputs, the reference answer, how to call
the student's function, how to score what comes back and the diagnoses it gives; see
``course_adv.grading.spec`` for the vocabulary and ``ex02_fgsm.py`` for an example.
"""
