"""The standard CIFAR-100 few-shot class splits: CIFAR-FS and FC100, as CIFAR-100 fine-class names.

* CIFAR-FS (Bertinetto et al., ICLR 2019, https://arxiv.org/abs/1805.08136): 64/16/20 fine classes. The lists are
  the split files of the authors' release, as shipped by torchmeta
  (``torchmeta/datasets/assets/cifar100/cifar-fs/{train,val,test}.json``).
* FC100 (Oreshkin et al., NeurIPS 2018, https://arxiv.org/abs/1805.10123): 60/20/20 fine classes, split by
  superclass 12/4/4 (``torchmeta/datasets/assets/cifar100/fc100/*.json``); each superclass holds the five fine
  classes of the CIFAR-100 hierarchy below.

Names are those of the ``fine_label`` / ``coarse_label`` ClassLabels of ``uoft-cs/cifar100``.
"""

from __future__ import annotations

__all__ = ["CIFAR100_SUPERCLASSES", "CIFAR_FS_SPLIT", "FC100_SUPERCLASS_SPLIT", "FC100_SPLIT"]

#: The CIFAR-100 hierarchy: superclass -> its five fine classes (Krizhevsky 2009).
CIFAR100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}

CIFAR_FS_SPLIT: dict[str, tuple[str, ...]] = {
    "train": (
        "dolphin", "seal", "aquarium_fish", "ray", "trout", "orchid", "sunflower", "tulip", "bottle", "bowl", "can",
        "cup", "plate", "apple", "mushroom", "orange", "pear", "clock", "keyboard", "chair", "couch", "bee",
        "caterpillar", "cockroach", "bear", "lion", "tiger", "wolf", "bridge", "castle", "house", "road",
        "skyscraper", "cloud", "forest", "mountain", "elephant", "kangaroo", "porcupine", "possum", "raccoon",
        "skunk", "lobster", "spider", "boy", "girl", "dinosaur", "lizard", "snake", "turtle", "hamster", "mouse",
        "rabbit", "shrew", "squirrel", "oak_tree", "palm_tree", "pine_tree", "willow_tree", "bus", "train",
        "lawn_mower", "streetcar", "tank",
    ),
    "val": (
        "beaver", "otter", "flatfish", "shark", "lamp", "television", "beetle", "butterfly", "sea", "camel", "cattle",
        "crab", "crocodile", "maple_tree", "motorcycle", "tractor",
    ),
    "test": (
        "whale", "poppy", "rose", "sweet_pepper", "telephone", "bed", "table", "wardrobe", "leopard", "plain",
        "chimpanzee", "fox", "snail", "worm", "baby", "man", "woman", "bicycle", "pickup_truck", "rocket",
    ),
}

FC100_SUPERCLASS_SPLIT: dict[str, tuple[str, ...]] = {
    "train": (
        "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
        "household_furniture", "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "reptiles", "trees",
        "vehicles_1", "vehicles_2",
    ),
    "val": ("large_carnivores", "large_omnivores_and_herbivores", "non-insect_invertebrates", "small_mammals"),
    "test": ("aquatic_mammals", "insects", "medium_mammals", "people"),
}

FC100_SPLIT: dict[str, tuple[str, ...]] = {
    split: tuple(fine for sc in superclasses for fine in CIFAR100_SUPERCLASSES[sc])
    for split, superclasses in FC100_SUPERCLASS_SPLIT.items()
}
