"""The one label vocabulary of the project: canonical finding names and their synonyms.

Every reader maps the finding names of its data set to a *canonical* name, so that a
"Pleural Effusion" output of a CheXpert teacher, NIH's "Effusion" and VinDr's
"Pleural effusion" are the same class everywhere (distillation targets, metrics,
reports). The canonical names are the union of CheXpert's 14 observations,
NIH ChestX-ray14's 14 findings plus "No Finding", VinDr-CXR's 15 classes, and the
"COVID-19" class of the multiclass COVID data sets.

Look-up (:func:`canonical_finding`) ignores case, and treats runs of spaces,
underscores and hyphens as one space (``"pleural_effusion"``, ``"PLEURAL  EFFUSION"``
and ``"Pleural-Effusion"`` all match); spaces around ``/`` are ignored.

Data sets: C = CheXpert, N = NIH ChestX-ray14 (and ChestMNIST), V = VinDr-CXR,
M = multiclass sets (PneumoniaMNIST, Kermany, cxr3). PadChest's report terms are mapped by
:data:`PADCHEST_TERMS` (a term and its more specific children -> one canonical name).

==========================  ==================================================  =========
canonical name              synonyms (besides case/space/underscore variants)   data sets
==========================  ==================================================  =========
No Finding                  No finding (V), Normal (M)                           C N V M
Enlarged Cardiomediastinum  Widened Mediastinum                                  C
Cardiomegaly                                                                     C N V
Lung Opacity                Opacity                                              C V
Lung Lesion                                                                      C
Edema                       Oedema, Pulmonary Edema                              C N
Consolidation                                                                    C N V
Pneumonia                                                                        C N M
Atelectasis                                                                      C N V
Pneumothorax                                                                     C N V
Pleural Effusion            Effusion (N), Pleural effusion (V), Effusions        C N V
Pleural Other                                                                    C
Fracture                    Fractures                                            C
Support Devices             Support Device, Devices                              C
Infiltration                Infiltrate (N box list), Infiltrates                 N V
Mass                                                                             N
Nodule                                                                           N
Emphysema                                                                        N
Fibrosis                    Pulmonary fibrosis (V)                               N V
Pleural Thickening          Pleural_Thickening (N), pleural (ChestMNIST)         N V
Hernia                                                                           N
Aortic Enlargement          Aortic enlargement (V)                               V
Calcification                                                                    V
Interstitial Lung Disease   ILD (V)                                              V
Nodule/Mass                 Mass/Nodule, Nodule or Mass                          V
Other Lesion                Other lesion (V)                                     V
COVID-19                    covid, covid19, SARS-CoV-2                           M
==========================  ==================================================  =========

Notes:

* "Nodule/Mass" (VinDr) is its own class: it is *broader* than NIH's "Nodule" and
  "Mass" (which are told apart by size, 3 cm). :data:`BROADER_FINDING` records that
  relation for code that harmonises NIH with VinDr; no reader applies it silently.
* "Normal" is a synonym of "No Finding", but the multiclass readers keep "Normal" as
  their class *display* name (``["Normal", "Pneumonia"]``); ``canonical_finding`` of
  each of their class names is still defined.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import CXRDataError

__all__ = [
    "BROADER_FINDING",
    "CHEXPERT_FINDINGS",
    "FINDINGS",
    "NIH_FINDINGS",
    "PADCHEST_FINDINGS",
    "PADCHEST_TERMS",
    "SYNONYMS",
    "SYNTHETIC_FINDINGS",
    "VINDR_FINDINGS",
    "canonical_finding",
    "canonical_findings",
    "normalise_name",
]

# canonical name -> synonyms (only those that differ by more than case/space/underscore/hyphen)
_TABLE: dict[str, tuple[str, ...]] = {
    "No Finding": ("Normal", "No findings"),
    "Enlarged Cardiomediastinum": ("Widened Mediastinum",),
    "Cardiomegaly": (),
    "Lung Opacity": ("Opacity",),
    "Lung Lesion": (),
    "Edema": ("Oedema", "Pulmonary Edema"),
    "Consolidation": (),
    "Pneumonia": (),
    "Atelectasis": (),
    "Pneumothorax": (),
    "Pleural Effusion": ("Effusion", "Effusions", "Pleural Effusions"),
    "Pleural Other": (),
    "Fracture": ("Fractures",),
    "Support Devices": ("Support Device", "Devices"),
    "Infiltration": ("Infiltrate", "Infiltrates"),
    "Mass": (),
    "Nodule": (),
    "Emphysema": (),
    "Fibrosis": ("Pulmonary Fibrosis",),
    "Pleural Thickening": ("Pleural",),
    "Hernia": (),
    "Aortic Enlargement": (),
    "Calcification": (),
    "Interstitial Lung Disease": ("ILD",),
    "Nodule/Mass": ("Mass/Nodule", "Nodule or Mass"),
    "Other Lesion": (),
    "COVID-19": ("covid", "covid19", "SARS-CoV-2"),
}

#: Every canonical finding name, in the order of the table above.
FINDINGS: tuple[str, ...] = tuple(_TABLE)

#: CheXpert's 14 observations, in the column order of CheXpert's train.csv / valid.csv.
CHEXPERT_FINDINGS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

#: NIH ChestX-ray14's 14 findings (canonical names), in the order ChestMNIST's label vector uses
#: (the usual NIH order: Atelectasis, Cardiomegaly, Effusion, Infiltration, Mass, Nodule, ...).
NIH_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Pleural Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural Thickening",
    "Hernia",
)

#: VinDr-CXR's 15 classes (canonical names) in ``class_id`` order 0..14; "No Finding" is class 14.
VINDR_FINDINGS: tuple[str, ...] = (
    "Aortic Enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Consolidation",
    "Interstitial Lung Disease",
    "Infiltration",
    "Lung Opacity",
    "Nodule/Mass",
    "Other Lesion",
    "Pleural Effusion",
    "Pleural Thickening",
    "Pneumothorax",
    "Fibrosis",
    "No Finding",
)

#: PadChest's classes here (canonical names): the shared-vocabulary findings its report terms reach.
PADCHEST_FINDINGS: tuple[str, ...] = (
    "No Finding",
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Enlarged Cardiomediastinum",
    "Fibrosis",
    "Fracture",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural Effusion",
    "Pleural Thickening",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

#: PadChest report terms (``Labels``, lower case) -> canonical finding. PadChest labels the most specific
#: term of its hierarchy ("lobar atelectasis" under "atelectasis"), so a class takes its children too;
#: "subcutaneous emphysema" is not emphysema of the lung and stays out. The other ~170 terms
#: ("COPD signs", "aortic elongation", "scoliosis", "unchanged" ...) are not classes (no output, and
#: they do not make "No Finding"); "exclude" and "suboptimal study" mark rows the reader leaves out.
PADCHEST_TERMS: dict[str, str] = {
    term: canonical
    for canonical, terms in {
        "No Finding": ("normal",),
        "Atelectasis": ("atelectasis", "laminar atelectasis", "lobar atelectasis", "segmental atelectasis",
                        "total atelectasis", "atelectasis basal", "round atelectasis"),
        "Cardiomegaly": ("cardiomegaly",),
        "Consolidation": ("consolidation",),
        "Edema": ("pulmonary edema",),
        "Emphysema": ("emphysema",),
        "Enlarged Cardiomediastinum": ("mediastinal enlargement", "superior mediastinal enlargement"),
        "Fibrosis": ("pulmonary fibrosis",),
        "Fracture": ("fracture", "rib fracture", "callus rib fracture", "clavicle fracture", "humeral fracture",
                     "vertebral fracture"),
        "Hernia": ("hiatal hernia",),
        "Infiltration": ("infiltrates",),
        "Mass": ("mass", "pulmonary mass"),
        "Nodule": ("nodule", "multiple nodules"),
        "Pleural Effusion": ("pleural effusion", "loculated pleural effusion", "loculated fissural effusion"),
        "Pleural Thickening": ("pleural thickening", "apical pleural thickening", "calcified pleural thickening"),
        "Pneumonia": ("pneumonia", "atypical pneumonia"),
        "Pneumothorax": ("pneumothorax", "hydropneumothorax"),
        "Support Devices": ("pacemaker", "dual chamber device", "single chamber device", "electrical device",
                            "nsg tube", "endotracheal tube", "tracheostomy tube", "chest drain tube", "catheter",
                            "central venous catheter", "central venous catheter via jugular vein",
                            "central venous catheter via subclavian vein", "central venous catheter via umbilical vein",
                            "reservoir central venous catheter"),
    }.items()
    for term in terms
}

#: The findings the synthetic-image generator draws.
SYNTHETIC_FINDINGS: tuple[str, ...] = (
    "Nodule",
    "Consolidation",
    "Pleural Effusion",
    "Cardiomegaly",
    "Pneumothorax",
)

#: Finer finding -> the broader class that contains it (used only when harmonising on purpose).
BROADER_FINDING: dict[str, str] = {"Nodule": "Nodule/Mass", "Mass": "Nodule/Mass"}

_SEPARATORS = re.compile(r"[\s_\-]+")
_SLASH = re.compile(r"\s*/\s*")


def normalise_name(name: str) -> str:
    """The look-up key of a name: lower case, runs of space/underscore/hyphen -> one space."""
    key = _SEPARATORS.sub(" ", str(name).strip().lower()).strip()
    return _SLASH.sub("/", key)


#: normalised key -> canonical name, for every canonical name and synonym.
SYNONYMS: dict[str, str] = {}
for _canonical, _synonyms in _TABLE.items():
    for _name in (_canonical, *_synonyms):
        _key = normalise_name(_name)
        assert _key not in SYNONYMS, f"synonym {_name!r} listed twice"
        SYNONYMS[_key] = _canonical


def canonical_finding(name: str) -> str:
    """The canonical name of a finding name from any supported data set.

    >>> canonical_finding("Effusion"), canonical_finding("pleural_effusion")
    ('Pleural Effusion', 'Pleural Effusion')

    Raises :class:`CXRDataError` for a name that is not in the vocabulary.
    """
    canonical = SYNONYMS.get(normalise_name(name))
    if canonical is None:
        raise CXRDataError(None, f"unknown finding {name!r}; known: {', '.join(FINDINGS)}")
    return canonical


def canonical_findings(names: Iterable[str]) -> list[str]:
    """:func:`canonical_finding` of each name, in order."""
    return [canonical_finding(n) for n in names]


for _group in (CHEXPERT_FINDINGS, NIH_FINDINGS, VINDR_FINDINGS, PADCHEST_FINDINGS, SYNTHETIC_FINDINGS):
    assert all(_n in _TABLE for _n in _group), _group
assert set(PADCHEST_TERMS.values()) == set(PADCHEST_FINDINGS)
