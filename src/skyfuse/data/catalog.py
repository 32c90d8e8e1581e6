"""The registry of known scene-classification datasets: classes, spellings, counts, protocols, sources.

Why: the same class is spelled many ways across releases and papers (``storagetanks``, ``StorageTanks``,
``storage_tank``, ``storage tanks``); checking a downloaded copy needs the expected counts; the
leakage audit needs every common spelling and synonym of a class name; and users need to know where
a dataset comes from, how to cite it and under what terms it may be used.

Checksums: only values taken from a maintained loader (torchgeo / torchvision) are recorded, and only
as the hash those loaders publish (md5). No sha256 is recorded for any archive because none is
published by the dataset authors; `download.fetch_dataset` verifies whatever hash is known.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from skyfuse.registry import Registry


@dataclass(frozen=True)
class ClassInfo:
    """One class: its folder name as distributed, lower-case aliases, and expected image count."""

    name: str
    aliases: tuple[str, ...]
    count: int | None = None

    def matches(self, other: str) -> bool:
        return name_key(other) in {name_key(a) for a in (self.name, *self.aliases)}


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata of a published dataset; ``url`` is None where no stable direct link exists."""

    name: str
    title: str
    classes: tuple[ClassInfo, ...]
    total: int
    image_size: tuple[int, int]
    protocols: tuple[str, ...]
    citation: str
    licence: str
    homepage: str
    url: str | None = None
    archive: str | None = None
    sha256: str | None = None
    md5: str | None = None
    image_subdir: str = ""
    notes: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def expected_counts(self) -> dict[str, int | None]:
        return {c.name: c.count for c in self.classes}

    def find_class(self, name: str) -> ClassInfo | None:
        """The class that ``name`` spells (any alias, case and separator insensitive)."""
        for c in self.classes:
            if c.matches(name):
                return c
        return None

    def manual_instructions(self, root: str = "<DIR>") -> str:
        where = self.url or self.homepage
        return (
            f"download {self.title} from {where}, unpack it and point skyfuse at the folder that holds"
            f" the {len(self.classes)} class sub-folders (e.g. {root}/{self.classes[0].name}/)"
        )


# ---------------------------------------------------------------------------- spellings


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def name_key(name: str) -> str:
    """Lower-case letters and digits only: ``Storage_Tanks`` -> ``storagetanks``."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def split_words(name: str) -> list[str]:
    """Words of a class name written in camelCase, snake_case, kebab-case or with spaces."""
    spaced = _CAMEL.sub(" ", name)
    return [w for w in re.split(r"[\s_\-]+", spaced.lower()) if w]


def _plural(word: str) -> str:
    if word.endswith(("s", "sh", "ch", "x")):
        return word + "es" if not word.endswith("s") else word
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


def spellings(words: Sequence[str]) -> set[str]:
    """Spaced, joined, snake and kebab forms, with the last word singular and plural."""
    words = [w.lower() for w in words if w]
    if not words:
        return set()
    out: set[str] = set()
    for last in {words[-1], _singular(words[-1]), _plural(_singular(words[-1]))}:
        ws = [*words[:-1], last]
        for sep in (" ", "", "_", "-"):
            out.add(sep.join(ws))
    return out


def _cls(folder: str, count: int | None = None, words: str = "", *synonyms: str) -> ClassInfo:
    """Build a ClassInfo: ``words`` gives the word split when the folder name is all lower case."""
    parts = words.split() if words else split_words(folder)
    aliases = spellings(parts) | {folder.lower()}
    for syn in synonyms:
        aliases |= spellings(syn.split())
    return ClassInfo(folder, tuple(sorted(aliases)), count)


# ---------------------------------------------------------------------------- the datasets

DATASETS: Registry[DatasetInfo] = Registry("dataset")


def _add(info: DatasetInfo) -> None:
    DATASETS.add(info.name, info)


_RESEARCH = "research use; imagery from Google Earth, whose terms apply to the pixels"

_add(
    DatasetInfo(
        name="ucm",
        title="UC Merced Land Use",
        classes=tuple(
            _cls(n, 100, w, *s)
            for n, w, s in (
                ("agricultural", "", ("farmland", "cropland", "agriculture")),
                ("airplane", "", ("aircraft", "plane")),
                ("baseballdiamond", "baseball diamond", ("baseball field",)),
                ("beach", "", ()),
                ("buildings", "", ("building",)),
                ("chaparral", "", ("shrubland",)),
                ("denseresidential", "dense residential", ()),
                ("forest", "", ("woodland",)),
                ("freeway", "", ("highway", "motorway")),
                ("golfcourse", "golf course", ()),
                ("harbor", "", ("harbour", "port", "marina")),
                ("intersection", "", ("crossroads", "road junction")),
                ("mediumresidential", "medium residential", ()),
                ("mobilehomepark", "mobile home park", ("trailer park",)),
                ("overpass", "", ("flyover",)),
                ("parkinglot", "parking lot", ("car park", "parking")),
                ("river", "", ()),
                ("runway", "", ("airstrip",)),
                ("sparseresidential", "sparse residential", ()),
                ("storagetanks", "storage tanks", ("oil tanks",)),
                ("tenniscourt", "tennis court", ()),
            )
        ),
        total=2100,
        image_size=(256, 256),
        protocols=("ucm-80", "ucm-50"),
        citation=(
            "Y. Yang and S. Newsam, Bag-of-visual-words and spatial extensions for land-use"
            " classification, ACM SIGSPATIAL GIS 2010"
        ),
        licence="USGS National Map orthoimagery (public domain); dataset for research use",
        homepage="http://weegee.vision.ucmerced.edu/datasets/landuse.html",
        url="https://huggingface.co/datasets/torchgeo/ucmerced/resolve/main/UCMerced_LandUse.zip",
        archive="UCMerced_LandUse.zip",
        md5="5b7ec56793786b6dc8a908e8854ac0e4",
        image_subdir="UCMerced_LandUse/Images",
        notes="images are .tif (RGB, 8-bit), 0.3 m; a few are not exactly 256x256; md5 as in torchgeo",
    )
)

_AID_COUNTS = {
    "Airport": 360, "BareLand": 310, "BaseballField": 220, "Beach": 400, "Bridge": 360,
    "Center": 260, "Church": 240, "Commercial": 350, "DenseResidential": 410, "Desert": 300,
    "Farmland": 370, "Forest": 250, "Industrial": 390, "Meadow": 280, "MediumResidential": 290,
    "Mountain": 340, "Park": 350, "Parking": 390, "Playground": 370, "Pond": 420, "Port": 380,
    "RailwayStation": 260, "Resort": 290, "River": 410, "School": 300, "SparseResidential": 300,
    "Square": 330, "Stadium": 290, "StorageTanks": 360, "Viaduct": 420,
}  # fmt: skip
_AID_SYNONYMS: dict[str, tuple[str, ...]] = {
    "Airport": ("airfield", "aerodrome"),
    "BareLand": ("bare soil", "barren land"),
    "BaseballField": ("baseball diamond",),
    "Center": ("centre", "city center", "city centre", "downtown"),
    "Commercial": ("commercial area",),
    "Farmland": ("farm", "cropland", "agricultural land"),
    "Industrial": ("industrial area", "factory"),
    "Meadow": ("grassland",),
    "Parking": ("parking lot", "car park"),
    "Playground": ("sports field", "running track"),
    "Pond": ("lake",),
    "Port": ("harbor", "harbour"),
    "RailwayStation": ("railroad station", "train station"),
    "Square": ("plaza", "public square"),
    "StorageTanks": ("oil tanks", "tanks"),
}
_add(
    DatasetInfo(
        name="aid",
        title="AID (Aerial Image Dataset)",
        classes=tuple(_cls(n, c, "", *_AID_SYNONYMS.get(n, ())) for n, c in _AID_COUNTS.items()),
        total=10000,
        image_size=(600, 600),
        protocols=("aid-20", "aid-50"),
        citation=(
            "G.-S. Xia et al., AID: A benchmark data set for performance evaluation of aerial scene"
            " classification, IEEE TGRS 55(7), 2017"
        ),
        licence=_RESEARCH,
        homepage="https://captain-whu.github.io/AID/",
        notes="distributed through OneDrive/Baidu links on the homepage; no direct URL or checksum",
    )
)

_NWPU = (
    "airplane", "airport", "baseball_diamond", "basketball_court", "beach", "bridge", "chaparral",
    "church", "circular_farmland", "cloud", "commercial_area", "dense_residential", "desert",
    "forest", "freeway", "golf_course", "ground_track_field", "harbor", "industrial_area",
    "intersection", "island", "lake", "meadow", "medium_residential", "mobile_home_park",
    "mountain", "overpass", "palace", "parking_lot", "railway", "railway_station",
    "rectangular_farmland", "river", "roundabout", "runway", "sea_ice", "ship", "snowberg",
    "sparse_residential", "stadium", "storage_tank", "tennis_court", "terrace",
    "thermal_power_station", "wetland",
)  # fmt: skip
_NWPU_SYNONYMS: dict[str, tuple[str, ...]] = {
    "airplane": ("aircraft", "plane"),
    "baseball_diamond": ("baseball field",),
    "ground_track_field": ("running track", "track field"),
    "harbor": ("harbour", "port"),
    "parking_lot": ("car park", "parking"),
    "railway_station": ("train station",),
    "snowberg": ("snow mountain", "iceberg"),
    "thermal_power_station": ("power plant", "power station"),
    "storage_tank": ("oil tank",),
}
_add(
    DatasetInfo(
        name="nwpu-resisc45",
        title="NWPU-RESISC45",
        classes=tuple(_cls(n, 700, "", *_NWPU_SYNONYMS.get(n, ())) for n in _NWPU),
        total=31500,
        image_size=(256, 256),
        protocols=("nwpu-10", "nwpu-20"),
        citation=(
            "G. Cheng, J. Han and X. Lu, Remote sensing image scene classification: benchmark and"
            " state of the art, Proceedings of the IEEE 105(10), 2017"
        ),
        licence=_RESEARCH,
        homepage="https://gcheng-nwpu.github.io/",
        notes="distributed through OneDrive/Baidu links; no direct URL or published checksum",
    )
)

_WHU_COUNTS = (
    ("airport", 55, "", ()), ("beach", 50, "", ()), ("bridge", 52, "", ()),
    ("commercial", 56, "", ("commercial area",)), ("desert", 50, "", ()),
    ("farmland", 50, "", ("farm", "cropland")),
    ("footballfield", 50, "football field", ("soccer field", "football pitch")),
    ("forest", 53, "", ()), ("industrial", 53, "", ("industrial area",)),
    ("meadow", 61, "", ("grassland",)), ("mountain", 50, "", ()), ("park", 50, "", ()),
    ("parking", 50, "", ("parking lot", "car park")), ("pond", 54, "", ("lake",)),
    ("port", 53, "", ("harbor", "harbour")),
    ("railwaystation", 50, "railway station", ("train station",)),
    ("residential", 54, "", ("residential area",)), ("river", 56, "", ()),
    ("viaduct", 58, "", ()),
)  # fmt: skip
_add(
    DatasetInfo(
        name="whu-rs19",
        title="WHU-RS19",
        classes=tuple(_cls(n, c, w, *s) for n, c, w, s in _WHU_COUNTS),
        total=1005,
        image_size=(600, 600),
        protocols=("whu-60", "whu-40"),
        citation=(
            "G.-S. Xia et al., Structural high-resolution satellite image indexing, ISPRS TC VII"
            " Symposium 2010; D. Dai and W. Yang, Satellite image classification via two-layer"
            " sparse coding with biased image representation, IEEE GRSL 8(1), 2011"
        ),
        licence=_RESEARCH,
        homepage="https://captain-whu.github.io/BED4RS/",
        notes=(
            "original folders are CamelCase (footballField, railwayStation); 4 images have odd sizes;"
            " no published archive checksum"
        ),
    )
)

_add(
    DatasetInfo(
        name="rsscn7",
        title="RSSCN7",
        classes=tuple(
            _cls(n, 400, w, *s)
            for n, w, s in (
                ("Field", "", ("bField", "farmland")),
                ("Forest", "", ("eForest",)),
                ("Grass", "", ("aGrass", "grassland", "meadow")),
                ("Industry", "", ("cIndustry", "industrial")),
                ("Parking", "", ("gParking", "parking lot")),
                ("Resident", "", ("fResident", "residential")),
                ("RiverLake", "", ("dRiverLake", "river lake", "river", "lake")),
            )
        ),
        total=2800,
        image_size=(400, 400),
        protocols=("rsscn7-50", "rsscn7-20"),
        citation=(
            "Q. Zou et al., Deep learning based feature selection for remote sensing scene"
            " classification, IEEE GRSL 12(11), 2015"
        ),
        licence=_RESEARCH,
        homepage="https://github.com/palewithout/RSSCN7",
        notes="release folders carry a letter prefix (aGrass, bField, ...); both forms are aliases",
    )
)

_PATTERNNET = (
    "airplane", "baseball_field", "basketball_court", "beach", "bridge", "cemetery", "chaparral",
    "christmas_tree_farm", "closed_road", "coastal_mansion", "crosswalk", "dense_residential",
    "ferry_terminal", "football_field", "forest", "freeway", "golf_course", "harbor",
    "intersection", "mobile_home_park", "nursing_home", "oil_gas_field", "oil_well", "overpass",
    "parking_lot", "parking_space", "railway", "river", "runway", "runway_marking",
    "shipping_yard", "solar_panel", "sparse_residential", "storage_tank", "swimming_pool",
    "tennis_court", "transformer_station", "wastewater_treatment_plant",
)  # fmt: skip
_add(
    DatasetInfo(
        name="patternnet",
        title="PatternNet",
        classes=tuple(
            _cls(n, 800, "", *{"harbor": ("harbour",), "parking_lot": ("car park",)}.get(n, ()))
            for n in _PATTERNNET
        ),
        total=30400,
        image_size=(256, 256),
        protocols=("patternnet-80", "patternnet-50"),
        citation=(
            "W. Zhou et al., PatternNet: a benchmark dataset for performance evaluation of remote"
            " sensing image retrieval, ISPRS J. Photogramm. Remote Sens. 145, 2018"
        ),
        licence=_RESEARCH,
        homepage="https://sites.google.com/view/zhouwx/dataset",
        url=(
            "https://hf.co/datasets/torchgeo/PatternNet/resolve/"
            "2dbd901b00e301967a5c5146b25454f5d3455ad0/PatternNet.zip"
        ),
        archive="PatternNet.zip",
        md5="96d54b3224c5350a98d55d5a7e6984ad",
        image_subdir="PatternNet/images",
        notes="mirror and md5 as used by torchgeo",
    )
)

_EUROSAT = (
    ("AnnualCrop", 3000, ("annual crop land", "cropland")),
    ("Forest", 3000, ()),
    ("HerbaceousVegetation", 3000, ("herbaceous vegetation land",)),
    ("Highway", 2500, ("road", "freeway")),
    ("Industrial", 2500, ("industrial buildings",)),
    ("Pasture", 2000, ("pasture land", "grassland")),
    ("PermanentCrop", 2500, ("permanent crop land", "orchard")),
    ("Residential", 3000, ("residential buildings",)),
    ("River", 2500, ()),
    ("SeaLake", 3000, ("sea or lake", "sea", "lake")),
)
_add(
    DatasetInfo(
        name="eurosat-rgb",
        title="EuroSAT (RGB)",
        classes=tuple(_cls(n, c, "", *s) for n, c, s in _EUROSAT),
        total=27000,
        image_size=(64, 64),
        protocols=("eurosat-80", "eurosat-50"),
        citation=(
            "P. Helber et al., EuroSAT: a novel dataset and deep learning benchmark for land use and"
            " land cover classification, IEEE JSTARS 12(7), 2019"
        ),
        licence="MIT (per github.com/phelber/EuroSAT); Copernicus Sentinel-2 data",
        homepage="https://github.com/phelber/EuroSAT",
        url="https://madm.dfki.de/files/sentinel/EuroSAT.zip",
        archive="EuroSAT.zip",
        md5="c8fa014336c82ac7804f0398fcb19387",
        image_subdir="2750",
        notes="RGB JPEGs at 10 m; md5 as used by torchvision's EuroSAT loader",
    )
)


# ---------------------------------------------------------------------------- lookup API


def get_dataset(name: str) -> DatasetInfo:
    """The dataset called ``name``; a few common spellings are accepted (``NWPU``, ``WHU-RS19``)."""
    key = name_key(name)
    for n in DATASETS:
        info = DATASETS.get(n)
        if key in {name_key(info.name), name_key(info.title)} or key in _DATASET_ALIASES.get(n, ()):
            return info
    return DATASETS.get(name)  # raises ConfigError listing the known names


_DATASET_ALIASES: dict[str, tuple[str, ...]] = {
    "ucm": ("ucmerced", "ucmercedlanduse", "uc"),
    "nwpu-resisc45": ("nwpu", "resisc45", "nwpuresisc"),
    "whu-rs19": ("whu", "whurs", "whurs19"),
    "eurosat-rgb": ("eurosat",),
    "aid": ("aerialimagedataset",),
}


def list_datasets() -> list[str]:
    """Registry names, sorted."""
    return list(DATASETS)


def match_dataset(class_names: Sequence[str]) -> DatasetInfo | None:
    """The registry dataset whose classes include every name given (any spelling), or None.

    When several qualify, the one with the fewest extra classes wins (an exact match beats a
    superset), so a four-class AID subset matches AID and a full WHU-RS19 folder matches WHU-RS19.
    """
    if not class_names:
        return None
    best: tuple[int, str] | None = None
    for n in DATASETS:
        info = DATASETS.get(n)
        found = [info.find_class(c) for c in class_names]
        if any(f is None for f in found) or len({f.name for f in found if f}) != len(found):
            continue
        extra = len(info.classes) - len(class_names)
        if best is None or extra < best[0]:
            best = (extra, n)
    return None if best is None else DATASETS.get(best[1])


def class_aliases(class_name: str) -> list[str]:
    """Lower-case spellings, plurals and synonyms of ``class_name``, for the leakage audit.

    Works for any name: generated spellings of its words, plus the aliases of every registry class
    that the name spells (so ``storagetanks`` also yields ``storage tank`` and ``oil tanks``).
    Sorted longest first, so a matcher tries ``parking lot`` before ``parking``.
    """
    out = spellings(split_words(class_name)) | {class_name.lower()}
    key = name_key(class_name)
    for n in DATASETS:
        for c in DATASETS.get(n).classes:
            if c.matches(class_name) or key == name_key(c.name):
                out |= set(c.aliases)
    out.discard("")
    return sorted(out, key=lambda s: (-len(s), s))


__all__ = [
    "DATASETS",
    "ClassInfo",
    "DatasetInfo",
    "class_aliases",
    "get_dataset",
    "list_datasets",
    "match_dataset",
    "name_key",
    "split_words",
]
