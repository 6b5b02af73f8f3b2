"""Edit-R2 reference editor: BAGEL-7B-MoT image-editing inference with Edit-R2's IC-CoT.

Modules: ``config`` (architecture from the JSON configs), ``llm`` (Qwen2 MoT decoder), ``attention``,
``vit`` (SigLIP NaViT + connector), ``vae`` (FLUX autoencoder), ``model`` (the composite + position
tables + time embedding), ``context`` (KV-cache contexts and chunk operations), ``sampler`` (flow
matching + CFG), ``generation`` (greedy decoding, IC-CoT), ``loading`` (checkpoint files, key checks,
LoRA merge), ``editor`` (the ``edit-r2`` / ``bagel`` editors). Importing this package imports no torch.
"""
