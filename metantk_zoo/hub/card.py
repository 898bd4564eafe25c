"""The Hub model card of an exported run: YAML metadata (library_name: timm, tags, datasets, licence, model-index
with the few-shot results), usage, the genotype card and the citation.

MetaNTK-NAS: https://arxiv.org/abs/2203.09137.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from .cards import PAPER, CardData, render_markdown

__all__ = ["model_card"]

_TAGS = ["timm", "image-classification", "few-shot-learning", "neural-architecture-search", "metantk-zoo"]


def model_card(data: CardData, config: dict[str, Any], repo_id: str) -> str:
    """The Hub model card: YAML metadata (timm, tags, datasets, licence, model-index) and the genotype card."""
    results = data.results
    datasets = sorted({str(r["dataset"]) for r in results if r.get("dataset")})
    name = repo_id.split("/")[-1]
    eval_results = [
        EvalResult(
            task_type="image-classification",
            task_name=f"few-shot image classification ({r.get('n_way')}-way {r.get('n_shot')}-shot)",
            dataset_type=str(r.get("dataset") or "unknown"),
            dataset_name=str(r.get("dataset") or "unknown"),
            dataset_split=r.get("split"),
            metric_type="accuracy",
            metric_name=f"{r.get('n_way')}-way {r.get('n_shot')}-shot accuracy (%)",
            metric_value=round(100 * float(r["mean"]), 2),
            metric_args={"ci95": round(100 * float(r["ci95"]), 2), "protocol": r.get("protocol"),
                         "episodes": r.get("n_episodes", r.get("episodes")), "n_query": r.get("n_query")},
        )
        for r in results
    ]
    meta = ModelCardData(
        library_name="timm",
        license="mit",
        tags=list(_TAGS),
        datasets=datasets or None,
        model_name=name,
        eval_results=eval_results or None,
        pipeline_tag="image-feature-extraction",
    )
    arch = config["architecture"]
    usage = (
        "## Usage\n\n```python\nimport timm\nimport metantk_zoo  # registers the metantk_* architectures in timm "
        "(timm has no plugin mechanism)\n\n"
        f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()\n'
        "cfg = timm.data.resolve_model_data_config(model)\n"
        "transform = timm.data.create_transform(**cfg)   # 84x84, mini-ImageNet statistics\n"
        "features = model.forward_head(model.forward_features(x), pre_logits=True)   # (B, "
        f"{config.get('num_features', 576)}) few-shot features\n```\n\n"
        f"Or with the command line: `metantk-zoo pull {repo_id}`. Install with `pip install metantk-zoo`."
    )
    body = "\n\n".join([
        f"# {name}",
        f"A `{arch}` few-shot backbone ({config.get('num_classes')}-way pre-training head) from "
        f"metantk-zoo, a timm model zoo of {PAPER}. "
        "The genotype is stored as plain JSON in `config.json` (`model_args.genotype`) and in `genotype.json`.",
        usage,
        render_markdown(data, svg="cells.svg", heading_level=2).strip(),
        "## Citation\n\n```bibtex\n@inproceedings{wang2022metantknas,\n  title     = {Global Convergence of MAML and "
        "Theory-Inspired Neural Architecture Search for Few-Shot Learning},\n  author    = {Wang, Haoxiang and Wang, "
        "Yite and Sun, Ruoyu and Li, Bo},\n  booktitle = {CVPR},\n  year      = {2022}\n}\n```",
    ])
    return f"---\n{meta.to_yaml()}\n---\n\n{body}\n"
