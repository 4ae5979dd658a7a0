"""Writes train.json and dev.json: ADGEN-format advertising records made for mindkit's tests and examples (not taken
from the ADGEN dataset). Each summary follows from its keywords, so a finetuned model can learn the mapping.
    python data/adgen_sample/make_sample.py [output folder, default: beside this script]
"""
import json
import os
import random
import sys

KINDS = ["裙", "上衣", "裤", "外套", "衬衫", "卫衣"]
COLORS = ["白色", "黑色", "蓝色", "红色", "粉色", "绿色"]
STYLES = ["清新", "简约", "复古", "甜美", "休闲", "优雅"]
PATTERNS = ["碎花", "条纹", "格子", "纯色", "印花"]
FITS = ["宽松", "修身", "直筒"]
TEMPLATES = [
    "这款{color}{kind}采用{pattern}设计，{fit}的版型穿着舒适，尽显{style}气质。",
    "{style}风格的{color}{kind}，{pattern}元素点缀，{fit}剪裁更显身材。",
    "{fit}版型的{kind}选用{color}，搭配{pattern}图案，带来{style}的感觉。",
]


def record(rng):
    kind, color, style, pattern, fit = (rng.choice(x) for x in (KINDS, COLORS, STYLES, PATTERNS, FITS))
    content = f"类型#{kind}*颜色#{color}*风格#{style}*图案#{pattern}*版型#{fit}"
    template = TEMPLATES[(KINDS.index(kind) + STYLES.index(style)) % len(TEMPLATES)]
    return {"content": content, "summary": template.format(kind=kind, color=color, style=style, pattern=pattern,
                                                           fit=fit)}


def main(folder=None):
    rng = random.Random(2024)
    folder = folder or os.path.dirname(os.path.abspath(__file__))
    for name, count in (("train.json", 64), ("dev.json", 16)):
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            for _ in range(count):
                f.write(json.dumps(record(rng), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:2])
