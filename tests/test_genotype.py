"""Genotype parsing, validation and round trips over every published genotype."""

from __future__ import annotations

import json

import pytest

from metantk_zoo.genotype import GENOTYPE_OPS, Genotype, GenotypeError
from metantk_zoo.models.genotypes import NAMED, PUBLISHED
from metantk_zoo.models.ops import DARTS_FEWSHOT, OPS, SEARCH_SPACES

GOOD = PUBLISHED[0].text


def test_fifteen_published_genotypes():
    assert len(PUBLISHED) == 15
    assert len({p.key for p in PUBLISHED}) == 15


@pytest.mark.parametrize("pub", PUBLISHED, ids=lambda p: p.key)
def test_published_text_round_trips_byte_exact(pub):
    g = Genotype.parse(pub.text, naming=pub.naming)
    assert g.to_darts(naming=pub.naming) == pub.text
    assert Genotype.parse(g.to_darts()) == g  # canonical MNN form
    assert Genotype.parse(g.to_json()) == g
    assert Genotype.from_dict(json.loads(g.to_json(indent=2))) == g
    assert Genotype.coerce(g.to_dict()) == g


def test_parsed_structure_matches_published_text():
    g = NAMED["mini5_a"]
    assert g.normal[2] == (("conv_3x3", 0), ("sep_conv_3x3", 2))
    assert g.reduce[1] == (("conv_1x5_5x1", 1), ("dil_conv_3x3", 2))
    assert g.normal_concat == g.reduce_concat == (2, 3, 4)
    assert hash(g) == hash(Genotype.parse(g.to_json()))  # immutable and hashable


def test_metanas_pool_names_map_to_pool_bn():
    g = NAMED["metanas_v1"]
    assert ("max_pool_3x3BN", 3) in g.normal[2]
    with pytest.raises(GenotypeError, match="MetaNAS's 'max_pool_3x3' is pool\\+BN"):
        Genotype.parse(PUBLISHED[13].text)  # metanas_v1 read with MNN names


def test_flat_darts_form_and_range_are_read():
    g = NAMED["mini5_b"]
    flat = "Genotype(normal=[{}], normal_concat=range(2, 5), reduce=[{}], reduce_concat=range(2,5))".format(
        ", ".join(f"('{op}', {i})" for node in g.normal for op, i in node),
        ", ".join(f'("{op}", {i})' for node in g.reduce for op, i in node),
    )
    assert Genotype.parse(flat) == g


def test_ops_tables_agree():
    assert set(GENOTYPE_OPS) == set(DARTS_FEWSHOT) - {"none"}
    assert all(op in OPS for space in SEARCH_SPACES.values() for op in space)


BAD = [
    (GOOD.replace("'conv_3x3', 0", "'sep_conv_7x7', 0", 1), r"normal cell, node 2: unknown op 'sep_conv_7x7'"),
    (GOOD.replace("('dil_conv_3x3', 2), ('dil_conv_3x3', 3)", "('dil_conv_3x3', 2), ('dil_conv_3x3', 7)"),
     r"reduce cell, node 2: input index 7 out of range"),
    (GOOD.replace("[('sep_conv_3x3', 1), ('sep_conv_3x3', 2)]", "[('sep_conv_3x3', 2), ('sep_conv_3x3', 2)]", 1),
     r"normal cell, node 1: both ops read input 2"),
    (GOOD.replace("[('conv_3x3', 0), ('sep_conv_3x3', 2)]], normal_concat",
                  "[('conv_3x3', 0), ('sep_conv_3x3', 2)], [('conv_3x3', 0), ('sep_conv_3x3', 2)]], normal_concat"),
     r"normal cell: expected 3 nodes"),
    (GOOD.replace("[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 1)",
                  "[[('sep_conv_3x3', 0)], [('sep_conv_3x3', 1)", 1),
     r"normal cell, node 0: expected 2 \(op, input\) pairs"),
    (GOOD[:-1], r"malformed genotype text at position \d+: expected"),
    (GOOD.replace("normal=", "normal=__import__('os'),", 1), r"malformed genotype text at position 16"),
    (GOOD.replace("normal_concat=[2, 3, 4]", "normal_concat=[2, 3]"), r"normal_concat: expected \[2, 3, 4\]"),
    ("Genotype(normal=[], normal=[])", r"field 'normal' given twice"),
    (GOOD.replace("'conv_3x3', 0", "'none', 0", 1),
     r"node 2: unknown op 'none' \('none' is a search-space placeholder"),
    ("{\"normal\": [1, 2", r"malformed genotype JSON"),
    ('{"normal": [], "extra": 1}', r"unknown genotype field"),
    ("Genotype(reduce=[])", r"missing the 'normal' cell"),
    ("", r"empty genotype text"),
    ("lambda: 0", r"malformed genotype text at position 6: unexpected ': 0'"),
    ("print(1)", r"expected 'Genotype\(' or a JSON object, found 'print'"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_genotypes_are_rejected_with_location(text, message):
    with pytest.raises(GenotypeError, match=message):
        Genotype.parse(text)


def test_genotype_error_is_a_value_error():
    with pytest.raises(ValueError):
        Genotype.parse("Genotype(")
    with pytest.raises(GenotypeError, match="expected a Genotype, genotype text or dict, found int"):
        Genotype.coerce(3)
