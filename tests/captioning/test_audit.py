from __future__ import annotations

from skyfuse.captioning import audit_captions, load_captions, mask_captions
from skyfuse.captioning.audit import caption_overlap, class_terms, is_verdict, with_registry_classes
from tests.conftest import shared_path


def test_terms_and_verdicts() -> None:
    terms = class_terms("BaseballField")
    assert {"baseball field", "baseballfield", "baseball-field"} <= set(terms)
    assert is_verdict("Overall, this scene can be classified as an airport.")
    assert is_verdict("The scene type is a beach")
    assert not is_verdict("Several planes are parked near a terminal.")


def test_audit_counts_and_mask() -> None:
    caps = {
        "Beach/1.jpg": "Sand and waves. Overall, this scene can be classified as a beach.",
        "Beach/2.jpg": "Waves reach the sand next to a parking lot.",
        "StorageTanks/1.jpg": "Many round storage tanks. Many round storage tanks.",
        "StorageTanks/2.jpg": "Many round storage tanks. Many round storage tanks.",
        "Parking/1.jpg": "Cars in rows.",
    }
    rep = audit_captions(caps)
    assert rep.per_class["Beach"].self_named == 1 and rep.per_class["Beach"].verdicts == 1
    assert rep.per_class["Beach"].other_classes["Parking"] == 1
    assert rep.per_class["StorageTanks"].self_named == 2
    assert rep.shared_images == 2 and rep.cross_class_groups == 0
    masked = mask_captions(caps, ["Beach", "StorageTanks", "Parking"], token="[X]")
    assert masked["Beach/1.jpg"] == "Sand and waves."
    assert (
        masked["Beach/2.jpg"] == "Waves reach the sand next to a [X]."
    )  # "parking lot" is an alias
    assert "storage" not in masked["StorageTanks/1.jpg"]
    after = audit_captions(masked)
    assert after.self_named == 0 and after.verdicts == 0
    assert caption_overlap(caps, ["StorageTanks/1.jpg"], ["StorageTanks/2.jpg", "Beach/1.jpg"]) == 1


def test_aid_minitest_llava_leakage() -> None:
    """paper.md: verdicts in ~192/200; class word in 49/50 Airport, 49/50 BaseballField,
    45/50 Beach, 21/50 BareLand (by a looser 'class word' rule than our whole-name match)."""
    root = shared_path("aid-minitest")
    caps = load_captions(root)
    names, registry = with_registry_classes(["Airport", "BareLand", "BaseballField", "Beach"])
    assert registry == "aid" and len(names) == 30
    rep = audit_captions(caps, class_names=names)
    pc = rep.per_class
    assert rep.verdicts >= 190
    assert pc["Airport"].self_named >= 48 and pc["BaseballField"].self_named >= 45
    assert pc["Beach"].self_named >= 43 and pc["BareLand"].self_named <= 25
    assert pc["BareLand"].other_classes["Desert"] >= 10  # bare land is called a desert
    masked = audit_captions(mask_captions(caps, names), class_names=names)
    assert masked.self_named == 0 and masked.verdicts == 0


def test_rsicd_reuses_captions() -> None:
    caps = load_captions(shared_path("captions", "rsicd"), shared_path("aid-150px-dev"))
    rep = audit_captions(caps)
    assert len(caps) == 3000
    assert 0.05 < rep.shared_images / len(caps) < 0.5
