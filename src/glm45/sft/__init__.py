"""Supervised fine-tuning (paper §3.1): chat datasets with assistant-only loss masks and a thinking /
non-thinking mix, rejection sampling as a pipeline of filters, automatic agentic data
(glm45.sft.agentic), expert iteration, and `glm45 sft`.

Modules: records (samples, thinking mode), dataset (encode + best-fit shards), loss, train
(finetune), filters + verifiers (rejection-sampling pipeline), rejection (sampling, prompt
selection, response scaling), builtin (task data by domain), experts (expert iteration), evaluate (held-out checks), experiment, cli.
"""
