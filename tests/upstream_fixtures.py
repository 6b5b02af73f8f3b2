"""A stand-in for the Edit-R2 authors' checkout: the same files, constant names and function signatures,
holding this project's own placeholder strings (the authors' text is never in this repository).

Every module also imports a package that does not exist and raises at import time, so a test passes
only if micebench reads these files with ``ast`` and never imports or runs them.
"""

from __future__ import annotations

from pathlib import Path

SERVER = '''
import torch_is_not_installed_here  # micebench must never import this module
raise SystemExit("the reward server module was executed")

VLM_ADD_PROMPT = """PH-ADD-CHECK <{instruction}>
answer yes/no"""

VLM_REPLACE_PROMPT = """PH-REPLACE-CHECK <{instruction}>"""

VLM_COLOR_PROMPT = """PH-UNUSED-COLOR {object_name} {new_color}"""

VLM_TEXT_PROMPT = """PH-READ-ALL-TEXT"""

VLM_BACKGROUND_PROMPT = """PH-BACKGROUND [{background}]?"""


def evaluate_single(ref_img, gen_img, prompt, formatted_instruction, task_type):
    try:
        if task_type == "subject_add":
            return 0, f"ph add {formatted_instruction}"
        elif task_type == "color_alter":
            parsed = parse_instruction("color_alter", formatted_instruction)
            if parsed is None:
                return 0, f"ph invalid {formatted_instruction}"
            object_name, new_color = parsed
            vlm_resp = call_vlm_2image(ref_img, gen_img,
                f"PH-COLOR is {object_name} now {new_color}?")
            return int("yes" in vlm_resp), f"ph color {vlm_resp}"
        elif task_type == "material_alter":
            parsed = parse_instruction("material_alter", formatted_instruction)
            if parsed is None:
                return 0, f"ph invalid {formatted_instruction}"
            object_name, new_material = parsed
            vlm_resp = call_vlm_2image(ref_img, gen_img,
                f"PH-MATERIAL is {object_name} made of {new_material}?")
            return int("yes" in vlm_resp), f"ph material {vlm_resp}"
        else:
            return 0, f"ph unknown {task_type}"
    except Exception as e:
        return 0, f"ph error {e}"
'''

CLIENT = '''
import requests_is_not_installed_here
raise SystemExit("the client module was executed")

MULTITURN_VLM_PROMPT = """PH-GA-CM header
{instructions_formatted}
PH-GA-CM footer"""

MULTITURN_CU_VLM_PROMPT = """PH-GA-CU header
{instructions_formatted}
PH-GA-CU footer"""


def edival_ga_score_client(device=None, server_url=None, num_votes=None, temperature=None):
    def _process_single(imgs, instrs):
        pil_imgs = [_to_pil(img) for img in imgs]
        instructions_formatted = "\\n".join(f"PH-ROUND {i+1} :: {instr}" for i, instr in enumerate(instrs))
        prompt = MULTITURN_VLM_PROMPT.format(instructions_formatted=instructions_formatted)
        return prompt
    return _process_single


def edival_cu_score_client(device=None, server_url=None, num_votes=None, temperature=None):
    def _process_single(imgs, instrs, fmt_instrs):
        instructions_formatted = "\\n".join(
            f"PH-ROUND {i+1} :: {instr} || {fmt_instr}"
            for i, (instr, fmt_instr) in enumerate(zip(instrs, fmt_instrs))
        )
        prompt = MULTITURN_CU_VLM_PROMPT.format(instructions_formatted=instructions_formatted)
        return prompt
    return _process_single
'''

INFERENCER = """
from typing import List
import flash_attn_is_not_installed_here
raise SystemExit("the inferencer module was executed")

VLM_THINK_SYSTEM_PROMPT = '''PH-THINK-FIRST <think> ... </think>'''


class InterleaveInferencer:
    def __init__(self, model, nonmarkov_mode=None):
        self.nonmarkov_mode = nonmarkov_mode

    def _build_pe_question(self, history_prompts: List[str], current_prompt: str) -> str:
        history_text = "\\n".join(f"PH-H{k+1}: {p.strip()}" for k, p in enumerate(history_prompts))
        if self.nonmarkov_mode == 'cm':
            return f"PH-CM|{history_text}|{current_prompt.strip()}|"
        elif self.nonmarkov_mode == 'cu':
            return f"PH-CU|{history_text}|{current_prompt.strip()}|"
        return f"PH-GENERIC|{history_text}|{current_prompt.strip()}|"
"""

FILES = {
    "rewards/reward_server/edival_reward_server.py": SERVER,
    "flow_grpo/edival_client.py": CLIENT,
    "flow_grpo/bagel/inferencer.py": INFERENCER,
}


def write_fake_editr2(root: Path) -> dict[str, str]:
    """Write the stand-in checkout under ``root``; return the pins of its items (as a test's PINS)."""
    from micebench.upstream import UpstreamCheckout

    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return UpstreamCheckout(root, pins={}).pins_found()
