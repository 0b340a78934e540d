"""Language identification: resiliparse's bundled detector (offline default) or a fastText model.

Public fastText models, addressed by `ingest.language_id` (a ModelRef):
- lid.176 (176 languages, labels `__label__en`):
  https://dl.fbaipublicfiles.com/fasttext/supervised-models/lid.176.bin — copy it to S3 or a local
  path and set `uri` (and `sha256`) to that copy.
- GlotLID (2,000+ languages, labels `__label__eng_Latn`): `hf-hub:cis-lmu/glotlid/model.bin`.

Both return the `language` column as ISO 639-1 where the language has such a code (`en`, `de`),
else the model's own code (`yue`, `fil`), so one allowlist (`ingest.languages`) serves every model.
Prediction runs on a whole batch of texts at once; the model is loaded once per process.
"""

from __future__ import annotations

import functools
from typing import Protocol

from resiliparse.parse.lang import detect_fast

from curation.models import ModelRef, resolve

# resiliparse's detector returns an out-of-place rank; above 1200 it is unreliable.
_RANK_CUTOFF = 1200
# fastText reads one line; long pages add little beyond their first characters and cost time.
_FASTTEXT_CHARS = 10_000

# ISO 639-3 (and GlotLID's individual codes for macrolanguages) -> ISO 639-1.
_ISO3_TO_1 = dict(
    pair.split(":")
    for pair in (
        "afr:af amh:am ara:ar arb:ar ary:ar arz:ar apc:ar ajp:ar acm:ar asm:as aze:az azj:az azb:az bak:ba bel:be "
        "ben:bn bod:bo bos:bs bre:br bul:bg cat:ca ces:cs che:ce cmn:zh zho:zh cos:co cym:cy dan:da deu:de div:dv "
        "ell:el eng:en epo:eo est:et ekk:et eus:eu fao:fo fas:fa pes:fa prs:fa fin:fi fra:fr fry:fy gla:gd gle:ga "
        "glg:gl grn:gn gug:gn guj:gu hat:ht hau:ha heb:he hin:hi hrv:hr hun:hu hye:hy ibo:ig ido:io ind:id ina:ia "
        "isl:is ita:it jav:jv jpn:ja kal:kl kan:kn kat:ka kaz:kk khm:km kin:rw kir:ky kor:ko kur:ku kmr:ku ckb:ku "
        "lao:lo lat:la lav:lv lvs:lv lim:li lin:ln lit:lt ltz:lb lug:lg mal:ml mar:mr mkd:mk mlg:mg plt:mg mlt:mt "
        "mon:mn khk:mn mri:mi msa:ms zsm:ms mya:my nep:ne npi:ne nld:nl nno:nn nob:nb nor:no oci:oc ori:or ory:or "
        "orm:om gaz:om pan:pa pol:pl por:pt pus:ps pbt:ps que:qu roh:rm ron:ro rus:ru san:sa sin:si slk:sk slv:sl "
        "sme:se smo:sm sna:sn snd:sd som:so sot:st spa:es sqi:sq als:sq srp:sr sun:su swa:sw swh:sw swe:sv tam:ta "
        "tat:tt tel:te tgk:tg tgl:tl tha:th tir:ti ton:to tsn:tn tuk:tk tur:tr uig:ug ukr:uk urd:ur uzb:uz uzn:uz "
        "vie:vi vol:vo wln:wa wol:wo xho:xh yid:yi ydd:yi yor:yo zul:zu"
    ).split()
)


class LanguageIdentifier(Protocol):
    def predict(self, texts: list[str]) -> tuple[list[str], list[float]]:
        """(language code, confidence in [0, 1]) per text; ('unknown', 0.0) when nothing matches."""
        ...


class ResiliparseLanguageId:
    """resiliparse's bundled n-gram detector: no model file, works offline.

    Its score is 1 - rank / 1200 (the out-of-place distance), not a probability.
    """

    def predict(self, texts: list[str]) -> tuple[list[str], list[float]]:
        langs, scores = [], []
        for text in texts:
            lang, rank = detect_fast(text, cutoff=_RANK_CUTOFF)
            langs.append(lang)
            scores.append(0.0 if lang == "unknown" else max(0.0, 1.0 - rank / _RANK_CUTOFF))
        return langs, scores


class FastTextLanguageId:
    """A fastText language-id model (lid.176, GlotLID or one trained in house); score = top probability."""

    def __init__(self, path: str):
        import fasttext

        self.model = fasttext.load_model(path)

    def predict(self, texts: list[str]) -> tuple[list[str], list[float]]:
        lines = [" ".join(t[:_FASTTEXT_CHARS].split()) for t in texts]
        labels, probs = self.model.predict(lines, k=1)
        langs = [normalize_code(label[0]) if label else "unknown" for label in labels]
        scores = [min(1.0, float(p[0])) if len(p) else 0.0 for p in probs]
        return langs, scores


def normalize_code(label: str) -> str:
    """`__label__en` -> `en`; `__label__deu_Latn` -> `de`; unknown ISO 639-3 codes are kept as they are."""
    code = label.removeprefix("__label__").split("_")[0].lower()
    return _ISO3_TO_1.get(code, code)


@functools.lru_cache(maxsize=4)
def _cached(uri: str | None, sha256: str | None) -> LanguageIdentifier:
    if uri is None:
        return ResiliparseLanguageId()
    return FastTextLanguageId(str(resolve(ModelRef(uri=uri, sha256=sha256))))


def language_identifier(ref: ModelRef | None) -> LanguageIdentifier:
    """The configured identifier, loaded once per process (None: the bundled resiliparse detector)."""
    return _cached(ref.uri if ref else None, ref.sha256 if ref else None)
