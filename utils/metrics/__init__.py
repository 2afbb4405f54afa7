"""The course's measurements as plain functions, one module per topic.

Imports ``model_zoo``, ``interventions``, ``corpora`` and the base modules; ``checks``, ``cards``
and the course's machinery import it, never the reverse.

* ``loss``: next-token loss per token and per document, the entropy floor, song copies.
* ``heads``: attention-head scores (previous-token, duplicate-token, induction), repeated
  random tokens to measure them on, composition and copying scores of weight matrices.
* ``ioi``: the answer-minus-distractor logit difference on transfer prompts.
* ``probes``: activation datasets from Storyworld's annotations, linear probes.
* ``geometry``: two models' token embeddings compared (distance correlations, shared
  neighbours, LLE weights) and linear maps that carry vectors from one to the other.
* ``circuit``, ``steering``, ``saes``, ``countdown``, ``planted``, ``common``: the IOI circuit's
  head classes, steering directions, SAE quality, the capstone's measurements, Storyworld's
  planted variables token by token, and the helpers they share.
* ``transcoders``, ``attribution``: a transcoder set's quality, and attribution graphs over its
  features (the replacement model, direct and total effects, influence, pruning, interventions).

No model names appear here: a lesson's reference solution and a zoo model's card call the
same function, so a number in a lesson and on a card share one definition. What is measured
for which model is ``utils.model_zoo.registry``'s business; writing the cards is
``utils.cards``'s.
"""
