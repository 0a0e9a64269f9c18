"""The Review page's panels, one module each: choosing examples (:mod:`.picker`), sessions and
the team (:mod:`.sessions`), one example and its decision controls (:mod:`.example`), agreement
and adjudication (:mod:`.agreement`) and exports (:mod:`.export`). Every panel takes the open
run and the review store as one :class:`ui.review.common.ReviewRun` argument."""
