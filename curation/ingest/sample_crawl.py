"""Deterministic synthetic web crawl (gzipped WARC) for exercising the curation pipeline.

`write_sample_crawl` writes a small crawl holding a known mix of page kinds (clean prose,
duplicates, spam, foreign-language, toxic, image-bearing, error and oddly-encoded pages)
plus a `crawl-manifest.json` sidecar giving the ground-truth kind of every page record.
Everything is derived from `random.Random(seed)`, so the same arguments give the same bytes.
"""

from __future__ import annotations

import html
import io
import json
import random
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from curation.scoring.scenes import STRIPES, TEMPLATES, Scene, random_scene, render_scene

# Share of pages per kind; "good" gets whatever is left (about 54%).
_SHARES = {
    "exact_duplicate": 0.06,
    "near_duplicate": 0.06,
    "boilerplate": 0.06,
    "short": 0.05,
    "non_english": 0.06,
    "toxic": 0.04,
    "images": 0.06,
    "http_error": 0.03,
    "non_html": 0.03,
    "invalid_utf8": 0.005,
    "latin1": 0.005,
}
SAMPLE_KINDS: tuple[str, ...] = ("good", *_SHARES)
TOXIC_LEXICON = ("fuck", "shit", "bastard", "asshole", "bitch")

# ~20 synthetic hosts: English sites, one per foreign language, spam sites and an image CDN.
_EN_HOSTS = [
    h.replace(".", ".example.")
    for h in (
        "daily-news.com riverside.org techblog.net gardening.com localhistory.org travelnotes.net foodie.com "
        "science-weekly.org citypaper.com outdoors.net craftsmen.org harbor-times.com valleyvoice.net bookclub.org"
    ).split()
]
_LANG_HOSTS = {"de": "zeitung.example.de", "fr": "journal.example.fr", "es": "diario.example.es"}
_SPAM_HOSTS = ["best-deals.example.biz", "click-portal.example.info"]
_CDN = "https://cdn.example.net/img"
_UA = "curation-sample-crawler/1.0"

# Vocabulary for English prose; slot-filled templates keep pages varied but natural-looking.
_ADJ = (
    "quiet broad modern ancient careful simple remarkable local small large early recent practical common rare useful "
    "important difficult familiar gentle steady bright narrow heavy subtle public private seasonal historic rural coastal"
).split()
_NOUN = (
    "village river market garden school bridge harbor library workshop kitchen museum forest valley railway festival "
    "council orchard farm factory island studio bakery hospital theater castle mill lake road tower newspaper"
).split()
_PEOPLE = (
    "researchers teachers farmers visitors engineers residents historians volunteers students builders fishermen "
    "artists cooks doctors travelers writers gardeners merchants nurses sailors"
).split()
_VERBS = [
    tuple(pair.split())
    for pair in (
        "build built|repair repaired|study studied|describe described|change changed|protect protected|open opened|"
        "measure measured|improve improved|explore explored|restore restored|record recorded|plan planned|share shared|"
        "manage managed|support supported|paint painted|clean cleaned|visit visited|photograph photographed|map mapped|"
        "rebuild rebuilt|celebrate celebrated|document documented"
    ).split("|")
]
_NAMES = (
    "Anna Miller|Tom Baker|Maria Lopez|David Chen|Sarah Brown|James Wilson|Emma Clark|Peter Hall|Laura King|Mark Evans".split("|")
)
_TOWNS = (
    "Ashford Brampton Cliffside Dunmore Eastwick Fairhaven Glenridge Hollowbrook Kingsbridge Millbrook Oakdale Riverton".split()
)
_SEASONS = ["spring", "summer", "autumn", "winter"]
_TOPICS = (
    "bread baking, river fishing, solar energy, bee keeping, wool weaving, tide pools, jazz music, stone masonry, "
    "cider making, bird migration, chess clubs, tea farming, glass blowing, clock repair, wild mushrooms, rail travel, "
    "sea kayaking, pottery, winter sports, book binding, olive oil, cycling routes, coral reefs, night skies, "
    "folk dancing, cheese making, rainwater harvesting, street food, woodcarving, public libraries, urban gardens, "
    "old maps, sailing boats, mountain huts"
).split(", ")
# Sentences are assembled from short fragments (opener, subject, verb, object, tail) so that
# fixed word runs stay shorter than 5 words: pages do not repeat 5-grams, which repetition
# filters (Gopher-style duplicate n-gram fractions) would otherwise flag.
_OPENERS = (
    "In {year},|Last {season},|According to the {people},|For many {people},|Even so,|Over time,|As a result,|"
    "Early in {year},|Every {season},|After the {adj} {season},|By the end of {year},|Not long ago,|Since then,|"
    "At the same time,|To the surprise of {name},|Back in {town},"
).split("|")
_SUBJECTS = (
    "the {people}|a group of {adj} {people}|many {people} from the {noun}|the {noun} committee|several {people}|"
    "a few {adj} {people}|the owner of the {noun}|our {people}|{name}, who runs the {noun},|two {people} from {town}|"
    "the {people} and their families|{name}"
).split("|")
_VERB_PHRASES = (
    "{past}|had {past}|quietly {past}|carefully {past}|decided to {base}|wanted to {base}|helped to {base}|began to {base}|"
    "agreed to {base}"
).split("|")
_WHEN = (
    "for many years, since the last century, during the long winter, every spring, in recent decades, after the war, "
    "before the great storm, over the summer, at the end of each day, in the early morning"
).split(", ")
_OBJECTS = (
    "the {adj} {noun}|a {adj} {noun} near the {noun2}|the old {noun} by the {noun2}|most of the {noun}|"
    "the {adj} history of {topic}|a small {noun} for {topic}|the {noun} and the {noun2}|every {noun} in {town}|"
    "the {adj} side of {topic}|their own {noun}"
).split("|")
_TAILS = (
    "|with {adj} care|to help the {people}|that had been {adj} for years|so that the {people} could {base} it again|"
    "before the {season} came|and the result was {adj}|because the {noun} needed it|with help from {people}|"
    "for the {adj} {people} of {town}|as many {people} have done before|which will be {adj} for {topic}|"
    "even though it was {adj} work|without much money|{when}|that the {people} have wanted for years|"
    "and it may be {adj} for a while"
).split("|")
_ALTS = (
    "{Adj} {noun} at dusk|A {adj} {noun} beside the {noun2} in the early morning light|{People} working in the {noun}|"
    "Map of the {noun} and the {adj} {noun2}|Photo of the old {noun} in {town}"
).split("|")
_SLOTS = {"adj": _ADJ, "noun": _NOUN, "people": _PEOPLE, "name": _NAMES, "town": _TOWNS, "season": _SEASONS, "when": _WHEN}
_QUOTES = [
    '"{Topic} is {adj} in {town}, and it should stay {adj2}," said {name}.',
    '"We {past} the {noun} with {adj} hands," said {name}.',
    "Ask anyone in {town} about {topic}, and the {people} will tell you it {past} the {noun}.",
]
_TOXIC_SENTENCES = [
    "One angry neighbour shouted that the whole project was a load of shit.",
    "What the fuck were they thinking when they closed the {noun}?",
    "He called the council leader a lying bastard in front of everyone.",
    "Only an asshole would park a truck across the entrance of the {noun}.",
    "She said the landlord was a greedy bitch who never fixed anything.",
    "Nobody gives a shit about the {noun} anymore, one resident wrote.",
    "Fuck this, said the driver, as the road to the {noun} flooded again.",
]
_SPAM_LINES = [
    "Buy cheap watches online best price",
    "Best casino bonus free spins win big now",
    "Cheap pills online no prescription fast delivery",
    "Lose weight fast miracle diet click now",
]
_LATIN1_SENTENCE = "Afterwards we met at a small café, where a naïve visitor admired the façade and ordered a crème brûlée."
# Real sentences with their own stop words; {n} and {place} vary them a little per page.
_FOREIGN = {
    "de": """Die Stadt liegt an einem breiten Fluss, und im Sommer kommen viele Besucher aus dem ganzen Land.
Seit mehr als {n} Jahren arbeiten die Menschen hier auf den Feldern und in den kleinen Werkstätten.
Der alte Markt wurde im letzten Jahrhundert gebaut und ist heute ein beliebter Treffpunkt für die Familien.
Wir haben mit einigen Bewohnern gesprochen, die uns von ihrer Kindheit in {place} erzählt haben.
Es ist nicht einfach, das Leben auf dem Land mit der Arbeit in der Stadt zu verbinden.
Die Schule hat einen neuen Garten, in dem die Kinder Gemüse und Blumen pflanzen können.
Am Wochenende fahren viele Leute mit dem Fahrrad zum See, weil das Wetter dort besser ist.
Nach dem langen Winter freuen sich alle auf das Fest, das jedes Jahr im Mai stattfindet.
Die Gemeinde plant, die Brücke über den Fluss zu erneuern, aber das Geld reicht noch nicht.
In der Bibliothek gibt es eine kleine Ausstellung über die Geschichte der Region und ihrer Bauern.
Viele junge Menschen ziehen in die großen Städte, doch einige kehren später wieder zurück.
Der Bürgermeister sagte, dass die neue Bahnlinie für die ganze Region sehr wichtig sei.
Wer durch die engen Gassen geht, kann noch die alten Häuser aus Holz und Stein sehen.
Im Herbst werden die Äpfel geerntet, und aus einem Teil davon macht man einen guten Saft.""",
    "fr": """La ville se trouve au bord d'une large rivière, et en été de nombreux visiteurs arrivent de tout le pays.
Depuis plus de {n} ans, les habitants travaillent dans les champs et dans les petits ateliers.
Le vieux marché a été construit au siècle dernier et il est aujourd'hui un lieu de rencontre pour les familles.
Nous avons parlé avec des habitants qui nous ont raconté leur enfance à {place}.
Il n'est pas facile de concilier la vie à la campagne avec le travail en ville.
L'école a un nouveau jardin où les enfants peuvent planter des légumes et des fleurs.
Le week-end, beaucoup de gens vont au lac à vélo, parce que le temps y est plus agréable.
Après le long hiver, tout le monde attend la fête qui a lieu chaque année au mois de mai.
La commune veut rénover le pont sur la rivière, mais le budget ne suffit pas encore.
Dans la bibliothèque, une petite exposition présente l'histoire de la région et de ses paysans.
Beaucoup de jeunes partent vivre dans les grandes villes, mais certains reviennent plus tard.
Le maire a dit que la nouvelle ligne de train était très importante pour toute la région.
En marchant dans les rues étroites, on peut encore voir les vieilles maisons en bois et en pierre.
En automne, on récolte les pommes, et avec une partie on fait un très bon jus.""",
    "es": """La ciudad está junto a un río ancho, y en verano llegan muchos visitantes de todo el país.
Desde hace más de {n} años, la gente trabaja en los campos y en los pequeños talleres.
El viejo mercado fue construido en el siglo pasado y hoy es un lugar de encuentro para las familias.
Hablamos con algunos vecinos que nos contaron cómo fue su infancia en {place}.
No es fácil combinar la vida en el campo con el trabajo en la ciudad.
La escuela tiene un nuevo huerto donde los niños pueden plantar verduras y flores.
Los fines de semana, mucha gente va al lago en bicicleta porque allí el tiempo es mejor.
Después del largo invierno, todos esperan la fiesta que se celebra cada año en el mes de mayo.
El ayuntamiento quiere renovar el puente sobre el río, pero el dinero todavía no es suficiente.
En la biblioteca hay una pequeña exposición sobre la historia de la región y de sus campesinos.
Muchos jóvenes se van a vivir a las grandes ciudades, pero algunos vuelven más tarde.
El alcalde dijo que la nueva línea de tren era muy importante para toda la región.
Al caminar por las calles estrechas, todavía se pueden ver las casas antiguas de madera y piedra.
En otoño se recogen las manzanas, y con una parte se hace un zumo muy bueno.""",
}
_PLACES = {
    "de": ["Freiburg", "Lübeck", "Passau", "Görlitz"],
    "fr": ["Annecy", "Nantes", "Colmar", "Arles"],
    "es": ["Toledo", "Cádiz", "Girona", "Segovia"],
}
_FOREIGN_TITLE = {"de": "Leben in {place}", "fr": "La vie à {place}", "es": "La vida en {place}"}
_SHORT = ["Coming soon.", "Page under construction. Please check back later.", "Thanks for subscribing!", "Nothing here yet."]
# Image pages: pictures from curation.scoring.scenes (the demo filter network's domain).
_REPEATED_IMAGE_SHARE = 0.1
_STRIPED_SHARE = 0.05  # the demo safety head's stand-in "unsafe" pattern


def _shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    toks = re.findall(r"\w+", text.lower())
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def jaccard5(a: str, b: str) -> float:
    """Jaccard similarity of lowercased word 5-gram sets (how near-duplicates are tuned)."""
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / max(1, len(sa | sb))


def _page_html(site: str, title: str, body: str, lang: str = "en", charset: str = "utf-8") -> str:
    nav = " | ".join(f'<a href="/{s.lower()}">{s}</a>' for s in ("Home", "News", "About", "Contact"))
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}">\n<head><meta charset="{charset}">'
        f"<title>{html.escape(title)}</title></head>\n<body>\n<nav>{nav}</nav>\n"
        f"<main><article>\n<h1>{html.escape(title)}</h1>\n{body}\n</article></main>\n"
        f"<footer><p>&copy; {site} &middot; Privacy policy &middot; Terms of use</p></footer>\n"
        "</body>\n</html>\n"
    )


def _paras_html(paragraphs: list[str]) -> str:
    return "\n".join(f"<p>{html.escape(p, quote=False)}</p>" for p in paragraphs)


class _CrawlBuilder:
    """Generates page documents; one method per kind, all drawing from one seeded RNG."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.goods: list[dict] = []  # earlier clean articles: sources for (near-)duplicates
        self.pictures: dict[tuple[str, int], list[tuple[bytes, Scene]]] = {}  # (format, size) -> (bytes, scene)
        self.counter = {"http_error": 0, "non_html": 0, "boilerplate": 0}

    def schedule(self, pages: int) -> list[str]:
        floor = 1 if pages >= 40 else 0  # every kind present from 40 pages up
        counts = {k: max(floor, round(s * pages)) for k, s in _SHARES.items()}
        kinds = [k for k, n in counts.items() for _ in range(n)]
        kinds = (["good"] * max(0, pages - len(kinds)) + kinds)[:pages]
        self.rng.shuffle(kinds)
        if "good" in kinds:  # duplicates need an earlier clean article to copy
            j = kinds.index("good")
            kinds[0], kinds[j] = kinds[j], kinds[0]
        return kinds

    def page(self, i: int, kind: str) -> dict:
        if kind in ("exact_duplicate", "near_duplicate") and not self.goods:
            kind = "good"
        return getattr(self, f"_{kind}")(i)

    # -- helpers --------------------------------------------------------------
    def _sentence(self, topics: list[str]) -> str:
        r = self.rng
        if r.random() < 0.1:
            text = r.choice(_QUOTES)
        else:
            parts = [r.choice(_SUBJECTS), r.choice(_VERB_PHRASES), r.choice(_OBJECTS), r.choice(_TAILS)]
            if r.random() < 0.4:
                parts.insert(0, r.choice(_OPENERS))
            if r.random() < 0.3:  # a second clause: longer sentences and plenty of "and"
                parts += [", and", r.choice(_SUBJECTS), r.choice(_VERB_PHRASES), r.choice(_OBJECTS)]
            text = " ".join(p for p in parts if p).replace(" , and", ", and") + "."
        return self._fill(text, topics)

    def _fill(self, template: str, topics: list[str] = _TOPICS) -> str:
        """Fill {slots}; every slot gets a fresh draw, which keeps 5-grams from repeating within a page."""
        r = self.rng
        base, past = r.choice(_VERBS)  # one verb per sentence: "repaired ... so they could repair it again"

        def pick(m: re.Match) -> str:
            key = m.group(1).rstrip("2").lower()
            if key in ("base", "past"):
                word = base if key == "base" else past
            elif key == "year":
                word = str(r.randint(1890, 2023))
            else:
                word = r.choice(topics if key == "topic" else _SLOTS[key])
            return word.capitalize() if m.group(1)[0].isupper() else word

        text = re.sub(r"\b([Aa]) (?=[aeio])", r"\1n ", re.sub(r"\{(\w+)\}", pick, template))
        return text[0].upper() + text[1:]

    def _fresh_article(self) -> tuple[str, str, list[str]]:
        r = self.rng
        topics = r.sample(_TOPICS, 2)
        title = f"{r.choice(_ADJ).capitalize()} {topics[0]} in the {r.choice(_NOUN)}"
        target, n_par = r.randint(170, 540), r.randint(4, 10)  # words, paragraphs
        paragraphs: list[str] = []
        total = 0
        for p in range(n_par):
            goal, sents, words = (target - total) / (n_par - p), [], 0
            while words < goal or not sents:
                sents.append(self._sentence(topics))
                words += len(sents[-1].split())
            paragraphs.append(" ".join(sents))
            total += words
        return r.choice(_EN_HOSTS), title, paragraphs

    def _url(self, host: str, title: str, i: int, ext: str = "") -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:50]
        section = self.rng.choice(["news", "blog", "articles", "stories", "guides"])
        return f"https://{host}/{section}/{slug}-{i}{ext}"

    @staticmethod
    def _doc(kind, url, body, ctype="text/html; charset=utf-8", status="200 OK", headers=(), **meta):
        return dict(kind=kind, url=url, body=body, content_type=ctype, status=status, headers=list(headers), assets=[], meta=meta)

    def _insert(self, paragraphs: list[str], sentence: str) -> None:
        p = self.rng.randrange(len(paragraphs))
        sents = re.split(r"(?<=[.?!]) ", paragraphs[p])
        sents.insert(self.rng.randrange(len(sents) + 1), sentence)
        paragraphs[p] = " ".join(sents)

    # -- page kinds -----------------------------------------------------------
    def _good(self, i: int) -> dict:
        host, title, paras = self._fresh_article()
        url = self._url(host, title, i)
        self.goods.append({"url": url, "host": host, "title": title, "paragraphs": paras})
        return self._doc("good", url, _page_html(host, title, _paras_html(paras)).encode())

    def _exact_duplicate(self, i: int) -> dict:
        src = self.rng.choice(self.goods)
        host = self.rng.choice([h for h in _EN_HOSTS if h != src["host"]])
        body = _page_html(host, src["title"], _paras_html(src["paragraphs"])).encode()
        return self._doc("exact_duplicate", self._url(host, src["title"], i), body, source_url=src["url"])

    def _near_duplicate(self, i: int) -> dict:
        r, src = self.rng, self.rng.choice(self.goods)
        paras, orig = list(src["paragraphs"]), " ".join(src["paragraphs"])
        if r.random() < 0.5:
            paras[-1] += " " + self._sentence([r.choice(_TOPICS)])
        # Swap single words until the 5-gram Jaccard drops into the 0.8-0.95 band.
        while (sim := jaccard5(orig, " ".join(paras))) > 0.92:
            p = r.randrange(len(paras))
            words = paras[p].split(" ")
            j = r.randrange(len(words))
            tail = words[j][len(words[j].rstrip(".,?")) :]
            words[j] = r.choice(_ADJ + _NOUN) + tail
            paras[p] = " ".join(words)
        host = r.choice(_EN_HOSTS)
        body = _page_html(host, src["title"], _paras_html(paras)).encode()
        url = self._url(host, src["title"], i)
        return self._doc("near_duplicate", url, body, source_url=src["url"], jaccard=round(sim, 3))

    def _boilerplate(self, i: int) -> dict:
        host = self.rng.choice(_SPAM_HOSTS)
        self.counter["boilerplate"] += 1
        if self.counter["boilerplate"] % 2:  # keyword stuffing
            line = self.rng.choice(_SPAM_LINES)
            body, title, variant = "\n".join([f"<p>{line}</p>"] * 40), line, "keyword_stuffing"
        else:  # a page that is nothing but navigation
            links = '<a href="/click">Click here</a> | <a href="/login">Login</a> | <a href="/signup">Sign up</a>'
            cats = [f'<li><a href="/category/{k}">Category {k}</a></li>' for k in range(1, 21)]
            body = "\n".join([f"<div>{links}</div>"] * 30 + ["<ul>", *cats, "</ul>"])
            title, variant = "Welcome | Login | Sign up", "navigation_only"
        return self._doc("boilerplate", self._url(host, title, i), _page_html(host, title, body).encode(), variant=variant)

    def _short(self, i: int) -> dict:
        msg, host = self.rng.choice(_SHORT), self.rng.choice(_EN_HOSTS)
        body = f"<html><head><title>Notice</title></head><body><p>{msg}</p></body></html>\n"
        return self._doc("short", self._url(host, "notice", i), body.encode())

    def _non_english(self, i: int) -> dict:
        r = self.rng
        lang = r.choice(sorted(_FOREIGN))
        place = r.choice(_PLACES[lang])
        pool = _FOREIGN[lang].format(n=r.randint(20, 400), place=place).split("\n")
        r.shuffle(pool)
        sents, words = [], 0
        while words < 160:  # 150+ words of real prose; cycle the pool if needed
            sents.append(pool[len(sents) % len(pool)])
            words += len(sents[-1].split())
        cut = sorted(r.sample(range(1, len(sents)), r.randint(2, 4)))
        paras = [" ".join(sents[a:b]) for a, b in zip([0, *cut], [*cut, len(sents)], strict=True)]
        host, title = _LANG_HOSTS[lang], _FOREIGN_TITLE[lang].format(place=place)
        body = _page_html(host, title, _paras_html(paras), lang=lang).encode()
        return self._doc("non_english", self._url(host, title, i), body, lang=lang)

    def _toxic(self, i: int) -> dict:
        host, title, paras = self._fresh_article()
        for s in self.rng.sample(_TOXIC_SENTENCES, self.rng.randint(3, 5)):
            self._insert(paras, self._fill(s))
        n_toxic = sum(len(re.findall(rf"\b{w}\b", " ".join(paras), re.I)) for w in TOXIC_LEXICON)
        body = _page_html(host, title, _paras_html(paras)).encode()
        return self._doc("toxic", self._url(host, title, i), body, toxic_words=n_toxic)

    def _image(self, fmt: str, size: int) -> tuple[bytes, Scene]:
        """A picture (encoded bytes) and the scene it shows; now and then a repeat of an earlier one."""
        r = self.rng
        earlier = self.pictures.setdefault((fmt, size), [])
        if earlier and r.random() < _REPEATED_IMAGE_SHARE:  # the same stock picture on another page
            return r.choice(earlier)
        scene = random_scene(r, striped_share=_STRIPED_SHARE)
        buf = io.BytesIO()  # fixed save params -> identical bytes every run
        options = {"quality": 85} if fmt == "JPEG" else {"compress_level": 6}
        render_scene(scene, r, size).save(buf, format=fmt, **options)
        earlier.append((buf.getvalue(), scene))
        return earlier[-1]

    def _caption(self, scene: Scene) -> tuple[str, str]:
        """(alt text, how it relates to the picture): mostly what it shows, sometimes not."""
        r = self.rng
        draw = r.random()
        if draw < 0.25:
            return "", "none"
        if draw < 0.65:
            return scene.caption(r.choice(TEMPLATES)), "matched"
        if draw < 0.82:
            other = scene
            while other == scene:
                other = random_scene(r)
            return other.caption(r.choice(TEMPLATES)), "mismatched"
        return self._fill(r.choice(_ALTS)), "generic"

    def _images(self, i: int) -> dict:
        r = self.rng
        host, title, paras = self._fresh_article()
        url = self._url(host, title, i)
        slug = url.rsplit("/", 1)[1]
        blocks, assets, images = list(paras), [], []
        for k in range(r.randint(2, 4)):
            fmt, ext, ctype = r.choice([("PNG", "png", "image/png"), ("JPEG", "jpg", "image/jpeg")])
            size = r.choice([64, 256])
            rel = r.random() < 0.5
            src = f"/static/img/{slug}-{k}.{ext}" if rel else f"{_CDN}/{i}-{k}.{ext}"
            body, scene = self._image(fmt, size)
            alt, relation = self._caption(scene)
            dims = f' width="{size}" height="{size}"' if r.random() < 0.5 else ""
            tag = f'<figure><img src="{src}" alt="{html.escape(alt)}"{dims}></figure>'
            blocks.insert(r.randrange(len(blocks) + 1), tag)
            img_url = urljoin(url, src)
            assets.append({"url": img_url, "content_type": ctype, "body": body})
            images.append({"src": src, "url": img_url, "alt": alt, "caption": relation, "striped": scene.background == STRIPES})
        body_html = "\n".join(b if b.startswith("<figure>") else _paras_html([b]) for b in blocks)
        doc = self._doc("images", url, _page_html(host, title, body_html).encode(), images=images)
        doc["assets"] = assets
        return doc

    def _http_error(self, i: int) -> dict:
        host = self.rng.choice(_EN_HOSTS)
        url = self._url(host, "missing page", i)
        n = self.counter["http_error"] = self.counter["http_error"] + 1
        if n % 3 == 1:
            page = "<p>The requested URL was not found on this server.</p>"
            return self._doc("http_error", url, _page_html(host, "404 Not Found", page).encode(), status="404 Not Found")
        if n % 3 == 2:
            target = f"https://{host}/moved/{i}"
            page = f'<html><body><p>Moved <a href="{target}">here</a>.</p></body></html>\n'
            headers = [("Location", target)]
            return self._doc("http_error", url, page.encode(), status="301 Moved Permanently", headers=headers, location=target)
        page = "<html><body><h1>Internal Server Error</h1></body></html>\n"
        return self._doc("http_error", url, page.encode(), status="500 Internal Server Error")

    def _non_html(self, i: int) -> dict:
        host = self.rng.choice(_EN_HOSTS)
        n = self.counter["non_html"] = self.counter["non_html"] + 1
        if n % 3 == 1:  # PDF-like: binary, never to be decoded as text
            body = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
            body += self.rng.randbytes(300) + b"\n%%EOF\n"
            return self._doc("non_html", self._url(host, "report", i, ".pdf"), body, "application/pdf")
        if n % 3 == 2:
            css = "body { margin: 0; font-family: sans-serif; }\n.nav a { color: #336699; }\n"
            return self._doc("non_html", self._url(host, "style", i, ".css"), css.encode(), "text/css")
        data = {"id": i, "items": [self.rng.choice(_NOUN) for _ in range(5)], "ok": True}
        body = json.dumps(data, sort_keys=True).encode()
        return self._doc("non_html", self._url(host, "api", i, ".json"), body, "application/json")

    def _invalid_utf8(self, i: int) -> dict:
        host, title, paras = self._fresh_article()
        self._insert(paras, "The sensor log read @@BAD@@ before it failed.")
        raw = _page_html(host, title, _paras_html(paras)).encode().replace(b"@@BAD@@", b"\xff\xfe\xfa")
        return self._doc("invalid_utf8", self._url(host, title, i), raw)

    def _latin1(self, i: int) -> dict:
        host, title, paras = self._fresh_article()
        self._insert(paras, _LATIN1_SENTENCE)
        raw = _page_html(host, title, _paras_html(paras), charset="iso-8859-1").encode("latin-1")
        return self._doc("latin1", self._url(host, title, i), raw, "text/html; charset=iso-8859-1")


class _Stamps:
    """WARC-Record-IDs and WARC-Dates from the seeded RNG: no clock, no global randomness."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.now = datetime(2024, 3, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(30 * 86400))

    def record_id(self) -> str:
        return f"<urn:uuid:{uuid.UUID(int=self.rng.getrandbits(128), version=4)}>"

    def tick(self) -> str:
        self.now += timedelta(seconds=self.rng.randint(1, 4))
        return self.now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_exchange(writer: WARCWriter, stamps: _Stamps, url: str, status: str, headers: list, body: bytes) -> str:
    """Write a request + response pair; return the response's WARC-Record-ID."""
    date, req_id, resp_id = stamps.tick(), stamps.record_id(), stamps.record_id()
    parts = urlsplit(url)
    req = StatusAndHeaders(
        f"GET {parts.path or '/'} HTTP/1.1",
        [("Host", parts.netloc), ("User-Agent", _UA), ("Accept", "*/*")],
        is_http_request=True,
    )
    req_warc = {"WARC-Record-ID": req_id, "WARC-Date": date, "WARC-Concurrent-To": resp_id}
    writer.write_record(
        writer.create_warc_record(url, "request", payload=io.BytesIO(b""), length=0, http_headers=req, warc_headers_dict=req_warc)
    )
    resp = StatusAndHeaders(status, [*headers, ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
    resp_warc = {"WARC-Record-ID": resp_id, "WARC-Date": date}
    writer.write_record(
        writer.create_warc_record(url, "response", io.BytesIO(body), len(body), http_headers=resp, warc_headers_dict=resp_warc)
    )
    return resp_id


def _write_fields(writer: WARCWriter, stamps: _Stamps, rec_type: str, uri: str, fields: dict, extra: dict) -> None:
    payload = "".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode()
    headers = {"WARC-Record-ID": stamps.record_id(), "WARC-Date": stamps.tick(), **extra}
    ctype = "application/warc-fields"
    writer.write_record(writer.create_warc_record(uri, rec_type, io.BytesIO(payload), len(payload), ctype, headers))


class _Chrome:
    """Site furniture around an article, the bulk of a real page's bytes (ASCII only, any charset)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def _words(self, n: int) -> str:
        return " ".join(self.rng.choice(_ADJ + _NOUN + _PEOPLE) for _ in range(n))

    def _head(self, host: str) -> str:
        r = self.rng
        rules = "".join(
            f".c{r.randrange(10**6)} {{ margin: {r.randrange(40)}px; color: #{r.randrange(16**6):06x}; display: flex; }}\n"
            for _ in range(r.randint(80, 220))
        )
        script = "".join(
            f"window.__cfg{k} = {{id: {r.randrange(10**8)}, path: '/{self._words(2).replace(' ', '/')}', ab: {r.random():.4f}}};"
            for k in range(r.randint(60, 200))
        )
        metas = "".join(f'<meta name="m{k}" content="{self._words(6)}">\n' for k in range(r.randint(8, 20)))
        links = "".join(
            f'<link rel="preload" href="https://{host}/assets/{r.randrange(10**9):x}.js" as="script">\n' for _ in range(12)
        )
        return f"{metas}{links}<style>\n{rules}</style>\n<script>\n{script}</script>\n"

    def _menu(self, host: str, n: int) -> str:
        items = "".join(
            f'<li><a href="https://{host}/{self._words(2).replace(" ", "-")}/">{self._words(2)}</a></li>' for _ in range(n)
        )
        return f'<ul class="menu">{items}</ul>\n'

    def _cards(self, host: str) -> str:
        r, cards = self.rng, []
        for _ in range(r.randint(4, 12)):
            title = self._words(r.randint(4, 9)).capitalize()
            alt = r.choice(["", title, "thumbnail", title])  # empty, caption-like or useless alt texts
            src = (
                f"/media/thumbs/{r.randrange(10**9):x}.jpg"
                if r.random() < 0.7
                else f"https://img.{host}/{r.randrange(10**9):x}.webp"
            )
            cards.append(
                f'<div class="card"><a href="/story/{r.randrange(10**6)}">'
                f'<img src="{src}" alt="{alt}" width="320" height="180">'
                f"<h3>{title}</h3></a><p>{self._words(r.randint(10, 25))}</p></div>"
            )
        return '<aside class="related">' + "\n".join(cards) + "</aside>\n"

    def wrap(self, body: bytes, url: str) -> bytes:
        r, host = self.rng, urlsplit(url).netloc
        head = self._head(host).encode()
        top = (
            f'<header><a href="/"><img src="/static/logo.svg" alt="{host} logo"></a>'
            f"{self._menu(host, r.randint(20, 60))}</header>\n"
            f'<div class="sidebar">{self._menu(host, r.randint(20, 50))}</div>\n'
        ).encode()
        social = "".join(f'<a href="#s{k}"><img src="/static/s{k}.png" alt=""></a>' for k in range(6))
        bottom = (
            f'{self._cards(host)}<div class="social">{social}</div>\n'
            f"<footer>{self._menu(host, r.randint(30, 80))}</footer>\n"
            f'<img src="https://pixel.example.com/t.gif?u={r.randrange(10**12)}" width="1" height="1">\n'
            f"<script>{self._words(200)}</script>\n"
        ).encode()
        if b"<head>" in body and b"<body>" in body and b"</body>" in body:
            body = body.replace(b"<head>", b"<head>" + head, 1).replace(b"<body>", b"<body>" + top, 1)
            return body.replace(b"</body>", bottom + b"</body>", 1)
        return body


def write_sample_crawl(out_dir: str, pages: int = 200, seed: int = 0, files: int = 2, site_chrome: bool = False) -> list[str]:
    """Write `files` gzipped WARC files (out_dir/crawl-00000.warc.gz, ...) holding about `pages` page records in total.

    Deterministic by seed: same args -> byte-identical files. Returns the paths, sorted.
    Also writes out_dir/crawl-manifest.json: per page record its file, url, kind, WARC-Record-ID,
    status and content type (plus source_url for duplicates, lang, image urls, ...), and the image records.
    `site_chrome` wraps every HTML page in realistic site furniture (inline CSS and scripts, menus,
    sidebar, related-article cards with images, footer), which makes pages 30-60 KB like Common
    Crawl's instead of about 3 KB; the article text and the manifest stay the same.
    """
    if files < 1 or pages < 0:
        raise ValueError("need files >= 1 and pages >= 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    builder = _CrawlBuilder(seed)
    docs = [builder.page(i, kind) for i, kind in enumerate(builder.schedule(pages))]
    stamps = _Stamps(builder.rng)
    if site_chrome:  # its own RNG: the pages' content and the stamps stay as without chrome
        chrome = _Chrome(random.Random(seed + 7919))
        for doc in docs:
            if doc["content_type"].startswith("text/html"):
                doc["body"] = chrome.wrap(doc["body"], doc["url"])
    paths, records, images = [], [], []
    for f in range(files):
        path = out / f"crawl-{f:05d}.warc.gz"
        with open(path, "wb") as fh:
            writer = WARCWriter(fh, gzip=True)
            info = {"software": __name__, "format": "WARC File Format 1.0", "isPartOf": f"curation-sample-seed-{seed}"}
            _write_fields(writer, stamps, "warcinfo", "", info, {"WARC-Filename": path.name})
            for n, doc in enumerate(docs[f * len(docs) // files : (f + 1) * len(docs) // files]):
                headers = [("Content-Type", doc["content_type"]), *doc["headers"]]
                rid = _write_exchange(writer, stamps, doc["url"], doc["status"], headers, doc["body"])
                status = int(doc["status"].split()[0])
                page = {"file": path.name, "kind": doc["kind"], "url": doc["url"], "record_id": rid, "status": status}
                records.append({**page, "content_type": doc["content_type"], **doc["meta"]})
                for a in doc["assets"]:
                    aid = _write_exchange(writer, stamps, a["url"], "200 OK", [("Content-Type", a["content_type"])], a["body"])
                    image = {"file": path.name, "url": a["url"], "record_id": aid, "page_url": doc["url"]}
                    images.append({**image, "content_type": a["content_type"]})
                if n % 25 == 24:  # occasional metadata records, which ingest must skip
                    fields = {"fetchTimeMs": 100 + n, "crawler": _UA}
                    _write_fields(writer, stamps, "metadata", doc["url"], fields, {"WARC-Concurrent-To": rid})
        paths.append(str(path))
    counts = {k: sum(r["kind"] == k for r in records) for k in SAMPLE_KINDS}
    manifest = {"seed": seed, "pages": len(records), "kinds": list(SAMPLE_KINDS), "counts": counts}
    manifest |= {"files": [Path(p).name for p in paths], "records": records, "images": images}
    (out / "crawl-manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=1) + "\n", encoding="utf-8")
    return sorted(paths)


def write_truncated_copy(src: str, dst: str, keep_fraction: float = 0.6) -> None:
    """Copy the first keep_fraction of src's bytes to dst, like an interrupted download."""
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError("keep_fraction must be within [0, 1]")
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep_fraction)])


def _html_pages(warc_path: str) -> Iterator[tuple[str, str, str, bytes, str | None]]:
    """(url, record id, WARC-Date, HTML payload, declared charset) of a WARC's HTTP 200 HTML responses."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    for rec in ArchiveIterator(warc_path, record_types=WarcRecordType.response, parse_http=True):
        if rec.http_headers is not None and rec.http_headers.status_code == 200:
            if (rec.http_content_type or "").startswith("text/html"):
                date = rec.headers.get("WARC-Date") or ""
                yield rec.headers.get("WARC-Target-URI"), rec.record_id, date, rec.reader.read(), rec.http_charset


def write_wet_copy(warc_path: str, dst: str) -> int:
    """The WET file of a WARC, the way Common Crawl derives one: a `conversion` record (text/plain,
    WARC-Refers-To the response) per HTML page, text by resiliparse. Returns the number of records."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    count = 0
    with open(dst, "wb") as fh:
        writer = WARCWriter(fh, gzip=dst.endswith(".gz"))
        for url, rid, date, body, charset in _html_pages(warc_path):
            text = extract_plain_text(bytes_to_str(body, charset or detect_encoding(body)), main_content=True).encode()
            headers = {"WARC-Record-ID": f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, rid)}>", "WARC-Date": date}
            headers["WARC-Refers-To"] = rid
            record = writer.create_warc_record(url, "conversion", io.BytesIO(text), len(text), "text/plain", headers)
            writer.write_record(record)
            count += 1
    return count


def write_jsonl_copy(warc_path: str, dst: str, field: str = "text") -> int:
    """A JSONL dump of a WARC's HTML pages ({"id", "url", "date", field}); `field` "text" holds extracted
    text, "html" the decoded page. Compressed by the name: .gz or .zst. Returns the number of lines."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    lines = []
    for url, rid, date, body, charset in _html_pages(warc_path):
        html_text = bytes_to_str(body, charset or detect_encoding(body))
        value = extract_plain_text(html_text, main_content=True) if field == "text" else html_text
        lines.append(json.dumps({"id": rid, "url": url, "date": date, field: value}, sort_keys=True))
    data = ("\n".join(lines) + "\n").encode()
    if dst.endswith(".gz"):
        import gzip

        data = gzip.compress(data, mtime=0)
    elif dst.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    Path(dst).write_bytes(data)
    return len(lines)
