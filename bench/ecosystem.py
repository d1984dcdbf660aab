#!/usr/bin/env python3
"""The ecosystem check: every loop finding (AMP2xx-AMP5xx) on real code, against a triage kept forever.

    python bench/ecosystem.py --extract-from /work/.mirror                   # build the checkouts, then check
    python bench/ecosystem.py --half dev                                      # the half we read while changing rules
    python bench/ecosystem.py --half scoring                                  # counted, not read, until a change is done
    python bench/ecosystem.py --save bench/ecosystem/baseline-COMMIT.json     # snapshot of the findings
    python bench/ecosystem.py --baseline bench/ecosystem/baseline-111e6c9.json  # what a change added/removed
    python bench/ecosystem.py --half dev --write-new                          # add '?' stubs for untriaged findings
    python bench/ecosystem.py --dev                                           # the labelled dev corpus instead

As ruff's ecosystem check guards its rule changes, this shows what a change does to code nobody
labelled in advance. ``ECOSYSTEM`` below pins 272 public repositories with hand-written PyTorch
training loops (34,670 Python files and notebooks), each with one of 13 domain tags (vision,
generative, speech, nlp, recsys, tabular, timeseries, rl, gnn, sciml, course, kaggle,
library-examples), none of them in ``../shared/corpus/reserved-repos.txt`` (kept for an independent
evaluation) or in the dev corpus, each at the commit of the snapshot that the ``fetch`` tool
brought (``MIRRORS/owner+name/repo``, a bare git directory or a work tree with ``.git``). Their
Python files and notebooks are extracted into ``CHECKOUTS/owner+name@commit[:10]`` (default
``/work/eco/checkouts``); their code is never committed.

Halves. A repository is in the *dev* half when the first byte of ``sha256(b"owner/name")`` is even,
else in the *scoring* half. The split is fixed (no seed, no list to edit): the dev half is read
finding by finding while rules change (129 repositories); the scoring half (143) is only counted (this script prints no
scoring-half finding one by one unless ``--list-scoring`` is given) until a change is done, so
its precision measures code nobody tuned on.

ampfix runs on each checkout as a user would (``ampfix check DIR``, all rules, unsafe fixes shown,
no project config). Every loop finding is looked up in the triage file (``bench/triage/ecosystem.json``,
or ``dev.json`` with ``--dev``), one entry per finding:

    {"repo", "path", "cell" (notebooks only), "line", "code", "verdict": "TP" | "FP" | "debatable" | "?", "fix": "ok" | "harmful" | "none",
     "reason": "one line, from reading the code and its callers", "status": "silenced" (optional)}

Verdicts are kept forever: an entry whose finding is no longer reported stays in the file and is
counted as *silenced* with its verdict (a silenced TP is a lost true positive, a silenced FP a
false alarm fixed); ``--write-new`` marks it ``"status": "silenced"`` and clears the mark if the
finding comes back. ``bench/triage/misses.json`` lists real AMP bugs seen while reading that no
finding reported, ``{"repo", "path", "cell" (notebooks), "line", "end_line" (optional), "code", "reason"}``; a miss
counts as found when a finding of its code lies in [line, end_line].

Printed per half and per rule: findings, TP/FP/debatable/untriaged, precision = TP / (TP + FP)
with its counts, offered fixes triaged harmful, silenced entries by verdict, and recall on the
known bugs (TP findings found + misses now found, over TP entries found or silenced + all misses).
Dev-corpus findings that a positive label expects count as TP without an entry. Exit 1 when a
finding of the selected half is untriaged, so a rule change cannot land unread.

``--save FILE`` writes the findings (repo, path, line, code, fix applicability, message, half:
no third-party code) as JSON; ``--baseline FILE`` prints, per half and per rule, the findings
added, removed, and changed (same place and code, other message or fix) against such a snapshot,
listing each one for the dev half only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from corpus_eval import DEFAULT_LABELS, checkout_dir, extract  # noqa: E402

DEFAULT_CHECKOUTS = "/work/eco/checkouts"
TRIAGE = os.path.join(HERE, "triage")
MISSES = os.path.join(TRIAGE, "misses.json")
LOOP_CODES = ("AMP2", "AMP3", "AMP4", "AMP5")
VERDICTS = ("TP", "FP", "debatable")
HALVES = ("dev", "scoring")

# Public repositories with hand-written training loops, at the commit of the fetched snapshot: (commit, domain).
ECOSYSTEM = {
    # vision
    "kuangliu/pytorch-cifar": ("49b7aa97b0c12fe0d4054e670403a16b6b834ddd", "vision"),
    "fundamentalvision/Deformable-DETR": ("11169a60c33333af00a4849f1808023eba96a931", "vision"),
    "facebookresearch/vicreg": ("4e12602fd495af83efd1631fbe82523e6db092e0", "vision"),
    "Tianxiaomo/pytorch-YOLOv4": ("a65d219f9066bae4e12003bd7cdc04531860c672", "vision"),
    "facebookresearch/sam2": ("2b90b9f5ceec907a1c18123530e92e794ad901a4", "vision"),
    "meituan/YOLOv6": ("e86a483f3f6bded25d45970b56831345a99744a4", "vision"),
    "apple/ml-cvnets": ("77717569ab4a852614dae01f010b32b820cb33bb", "vision"),
    "WongKinYiu/yolov9": ("5b1ea9a8b3f0ffe4fe0e203ec6232d788bb3fcff", "vision"),
    "facebookresearch/xcit": ("82f5291f412604970c39a912586e008ec009cdca", "vision"),
    "facebookresearch/simsiam": ("a7bc1772896d0dad0806c51f0bb6f3b16d290468", "vision"),
    "bubbliiiing/yolov7-pytorch": ("170bf5bc5fb5e89ef9b9ed83a05329d4ce49395e", "vision"),
    "xinntao/BasicSR": ("d21eac885b6de90a7adef7cc59e937dbdbb200b1", "vision"),
    "NVIDIA/semantic-segmentation": ("7726b144c2cc0b8e09c67eabb78f027efdf3f0fa", "vision"),
    "clovaai/deep-text-recognition-benchmark": ("e2117f2fb882b3c6085030500a260c113be27a63", "vision"),
    "Beckschen/TransUNet": ("02ef0010b36eb8328b5e689eadaf613602edf9b8", "vision"),
    "Project-MONAI/research-contributions": ("21ed8e57c7256834d4fbaf19579ca25ad3d135ee", "vision"),
    "ashawkey/torch-ngp": ("b6e080468925f0bb44827b4f8f0ed08291dcf8a9", "vision"),
    "yenchenlin/nerf-pytorch": ("63a5a630c9abd62b0f21c08703d0ac2ea7d4b9dd", "vision"),
    # fresh batch, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "Lornatang/SRGAN-PyTorch": ("8842030eb433f8578a77328060121fa5a9a3cb43", "vision"),
    "hustvl/Vim": ("dd0358ad1e42701f22afbefa0717cc8825cf9f45", "vision"),
    # fresh batch 2, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "HiLab-git/SSL4MIS": ("06df6047a59aba9988ced8331998b5957ecb356b", "vision"),
    "ljwztc/CLIP-Driven-Universal-Model": ("43c12399cc98a40f447342a8dc2cecae5edae84c", "vision"),
    # generative
    "NVlabs/edm": ("008a4e5316c8e3bfe61a62f874bddba254295afb", "generative"),
    "eriklindernoren/PyTorch-GAN": ("36d3c77e5ff20ebe0aeefd322326a134a279b93e", "generative"),
    "openai/consistency_models": ("e32b69ee436d518377db86fb2127a3972d0d8716", "generative"),
    "NVlabs/stylegan2-ada-pytorch": ("d72cc7d041b42ec8e806021a205ed9349f87c6a4", "generative"),
    "crowsonkb/k-diffusion": ("4601bf085320592473f681a62808ed873d17fad5", "generative"),
    "lucidrains/imagen-pytorch": ("c166739b03b06fbc2e7c00116ffc81724626ad08", "generative"),
    "lucidrains/DALLE-pytorch": ("58c1e1a4fef10725a79bd45cdb5581c03e3e59e7", "generative"),
    "ermongroup/ddim": ("e8df66cf02e457719930748b5c26e37e3126dfdd", "generative"),
    "willisma/SiT": ("947f95bd3a510e9af441d38c1e9f72e0eee873c5", "generative"),
    "cloneofsimo/lora": ("d84074b3e3496f1cfa8a3f49b8b9972ef463b483", "generative"),
    "guoyww/AnimateDiff": ("e92bd5671ba62c0d774a32951453e328018b7c5b", "generative"),
    "FoundationVision/LlamaGen": ("ce98ec41803a74a90ce68c40ababa9eaeffeb4ec", "generative"),
    "Vchitect/Latte": ("b27c24a17487e3c33ae4e92364521303d0f14845", "generative"),
    "NVIDIA/pix2pixHD": ("14b3b3c7fff413086e3b58df52096f16b6891172", "generative"),
    "LTH14/mar": ("fe470ac24afbee924668d8c5c83e9fec60af3a73", "generative"),
    # fresh batch, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "chuanyangjin/fast-DiT": ("0ddbd642f47057d5ec6145529237e1043a335942", "generative"),
    "sihyun-yu/REPA": ("67f714503e3892f993844aab088ffc5791c92613", "generative"),
    # fresh batch 2, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "cloneofsimo/minRF": ("4fc10e0cc8ba976152c7936a1af9717209f03e18", "generative"),
    # targeted 2026-12-02: found by searching for real AMP211-AMP215/AMP304 instances (read)
    "modelscope/DiffSynth-Studio": ("079e51c9f3f296bbe636aa74448a7e3637278232", "generative"),  # 5c89a15b^ of the snapshot: before #1404
    "3DTopia/LGM": ("fe8d12cff8c827df7bb77a3c8e8b37408cb6fe4c", "generative"),
    # speech
    "jik876/hifi-gan": ("4769534d45265d52a904b850da5a622601885777", "speech"),
    "NVIDIA/tacotron2": ("185cd24e046cc1304b4f8e564734d2498c6e2e6f", "speech"),
    "jaywalnut310/vits": ("2e561ba58618d021b5b8323d3765880f7e0ecfdb", "speech"),
    "RVC-Project/Retrieval-based-Voice-Conversion-WebUI": ("4338f12c3c28c80b3ac015e2d0df66c41592746d", "speech"),
    "NVIDIA/waveglow": ("8afb643df59265016af6bd255c7516309d675168", "speech"),
    "svc-develop-team/so-vits-svc": ("730930d337d171479eadf305f96cbed4bb393e77", "speech"),
    "ming024/FastSpeech2": ("d4e79eb52e8b01d24703b2dfc0385544092958f3", "speech"),
    "yl4579/StyleTTS2": ("5cedc71c333f8d8b8551ca59378bdcc7af4c9529", "speech"),
    "speechbrain/speechbrain": ("9c826ef3937bac885c8a6ca86c6889a30f256fb5", "speech"),
    "coqui-ai/TTS": ("dbf1a08a0d4e47fdad6172e433eeb34bc6b13b4e", "speech"),
    "descriptinc/descript-audio-codec": ("c7cfc5d2647e26471dc394f95846a0830e7bec34", "speech"),
    "s3prl/s3prl": ("ec8064b5889f81ca460fbe2c094ce576a6f120b7", "speech"),
    "lifeiteng/vall-e": ("9c69096d603ce13174fb5cb025f185e2e9b36ac7", "speech"),
    "kan-bayashi/ParallelWaveGAN": ("86740373ec609cb9fb192d472d2aea125041491a", "speech"),
    "facebookresearch/demucs": ("e976d93ecc3865e5757426930257e200846a520a", "speech"),
    "open-mmlab/Amphion": ("d3de90f02e7f1c7dbc24b04d52fe1b8ef438effe", "speech"),
    # fresh batch, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "p0p4k/vits2_pytorch": ("1f4f3790568180f8dec4419d5cad5d0877b034bb", "speech"),
    "fishaudio/Bert-VITS2": ("8f7fbd8c4770965225d258db548da27dc8dd934c", "speech"),
    # fresh batch 2, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "NVIDIA/radtts": ("07759cd474458f46db45cab975a85ba21b7fee0a", "speech"),
    "Plachtaa/VALL-E-X": ("3faaf8ccadb154d63b38070caf518ce9309ea0f4", "speech"),
    "yl4579/StarGANv2-VC": ("985df557acad47131587955bfe13ea9b99168f71", "speech"),
    # nlp
    "karpathy/build-nanogpt": ("6104ab1b53920f6e2159749676073ff7d815c1fa", "nlp"),
    "meta-llama/llama-recipes": ("faae2fd877995430906e1d0904131ecdaa89a604", "nlp"),
    "Lightning-AI/litgpt": ("26857050fe3ff627cd714fe92f5838f51a3d5efa", "nlp"),
    "jzhang38/TinyLlama": ("bf122247c486b6b897050e98cbb7bedae8eeba73", "nlp"),
    "OpenGVLab/LLaMA-Adapter": ("521a09da84f70f6913d54b7421afa24010319e47", "nlp"),
    "UKPLab/sentence-transformers": ("85ec64559f4414aa536eca4bf53538291e0a333f", "nlp"),
    "ThilinaRajapakse/simpletransformers": ("03a3789f2c65119949f7cd98b524e78c6cc87d27", "nlp"),
    "monologg/JointBERT": ("00324f60dda4a491b2913bc3065ae93966caea3f", "nlp"),
    "microsoft/LoRA": ("c4593f060e6a368d7bb5af5273b8e42810cdef90", "nlp"),
    "CarperAI/trlx": ("3340c2f3a56d1d14fdd5f13ad575121fa26b6d92", "nlp"),
    "mlfoundations/open_flamingo": ("655f693fbfa04cd6e9a987d960654624d48917cf", "nlp"),
    "mlfoundations/open_lm": ("9bb92ef1689333534b7057942a20d18a46d1fa52", "nlp"),
    "Alpha-VLLM/LLaMA2-Accessory": ("3777c43940ddfb45d3bc1046b118ca4401747ee2", "nlp"),
    # fresh batch, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "stanford-futuredata/ColBERT": ("501c29d9e0b7f7b393e36c4177ec2b141a253114", "nlp"),
    "jingyaogong/minimind": ("d65ef2c00ebc6082f9df11541e1b191655eddb00", "nlp"),
    # fresh batch 2, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "allenai/OLMo": ("59a53e3f68e546330ca5a99ec626e58f9ab96494", "nlp"),
    "huggingface/nanotron": ("2411b022a75fb7f7561a1bb4166706da5e1b76de", "nlp"),
    "facebookresearch/fairseq": ("3d262bb25690e4eb2e7d3c1309b1e9c406ca4b99", "nlp"),
    # targeted 2026-12-02: found by searching for real AMP211-AMP215/AMP304 instances (read)
    "dbiir/UER-py": ("9e1e635c3d81655d5fbd4474971ef98272e5de51", "nlp"),  # 7079fa5^ of the snapshot: HEAD dropped apex
    # recsys
    "pytorch/torchrec": ("a48cef79ebc333da92af1311c04b041ee21a8e75", "recsys"),
    "shenweichen/DeepCTR-Torch": ("f6854257b1fc29caab655ce72c6b5528b7432574", "recsys"),
    "pmixer/SASRec.pytorch": ("fde8a9c08febc2c898dc269b1d98ab762c50d2be", "recsys"),
    "gusye1234/LightGCN-PyTorch": ("947ca2b3b1d2d3545b114145710cb06c4e57b3d2", "recsys"),
    "guoyang9/NCF": ("89ff06ffcd2bca6bb773b54925265c208a28d318", "recsys"),
    "jaywonchung/BERT4Rec-VAE-Pytorch": ("f66f2534ebfd937778c7174b5f9f216efdebe5de", "recsys"),
    "xue-pai/FuxiCTR": ("063ac98935cde6421ca8d5dfd2b038297eb5c081", "recsys"),
    # fresh batch, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "meta-recsys/generative-recommenders": ("db1bf8f2e8f6a92a738dafd52a245eafb25a222b", "recsys"),
    "rixwew/pytorch-fm": ("f74ad19771eda104e99874d19dc892e988ec53fa", "recsys"),
    # fresh batch 2, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "ustcml/RecStudio": ("6f628ddd7ab3340f911ae7eada5d029cb062602d", "recsys"),
    "THUwangcy/ReChorus": ("e58d752558634d42be60de561d6f74df748583cc", "recsys"),
    # tabular
    "yandex-research/rtdl": ("4ca77be57aae445648df63e9ef3a5566b1f0a835", "tabular"),
    "yandex-research/tab-ddpm": ("b476257dd460b778ba09eb97f7a51d6490fa17f8", "tabular"),
    "jrzaurin/pytorch-widedeep": ("268dad9c228d3e6c598d677a023979707524a313", "tabular"),
    "somepago/saint": ("e288e84c77a54cfd2ffb55a53678fb7cbbb16630", "tabular"),
    "yandex-research/tabular-dl-revisiting-models": ("e3ed46cac38568785289d8fa16b8cfa585bde27e", "tabular"),
    # fresh batch, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "yandex-research/tabular-dl-tabr": ("17baa9082506f8e7a0f8d11bb1e08212926a1507", "tabular"),
    "LAMDA-Tabular/TALENT": ("c9d24c8ab44f8fabb1b7213b28a03a107394ce54", "tabular"),
    # fresh batch 2, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "automl/TabPFN": ("ddf5e852c05e42d7032604638ede86c81f9a95ea", "tabular"),
    "yandex-research/tabm": ("28e47ae301c92ec37787dde1ce923a0793f405b4", "tabular"),
    # timeseries
    "zhouhaoyi/Informer2020": ("29f2a739226a509202a092b464163da81fa74960", "timeseries"),
    "thuml/Autoformer": ("51c7d416ae120b805fd5beef2f4ccf7de496a6ff", "timeseries"),
    "cure-lab/LTSF-Linear": ("0c113668a3b88c4c4ee586b8c5ec3e539c4de5a6", "timeseries"),
    "yuqinie98/PatchTST": ("204c21efe0b39603ad6e2ca640ef5896646ab1a9", "timeseries"),
    # fresh batch, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "thuml/iTransformer": ("c2426e68ca13f74aaec08045c5c724d8ad328124", "timeseries"),
    "KimMeen/Time-LLM": ("0045cde1ae0a7e7960b8f2273404eabac0f9c5da", "timeseries"),
    # fresh batch 2, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "MAZiqing/FEDformer": ("c0f6b972def125691434d62be1ecadf710ae921a", "timeseries"),
    "moment-timeseries-foundation-model/moment": ("38f7310ad594100747ca2a8357e9c7ca7d323e0e", "timeseries"),
    "gzerveas/mvts_transformer": ("3f2e378bc77d02e82a44671f20cf15bc7761671a", "timeseries"),
    # rl
    "DLR-RM/stable-baselines3": ("e05d2dbe6eda0acd0ef2e316e3e4065677add3eb", "rl"),
    "thu-ml/tianshou": ("f2402056b03acafeedf2518a5088db55add004ab", "rl"),
    "openai/spinningup": ("038665d62d569055401d91856abb287263096178", "rl"),
    "ikostrikov/pytorch-a2c-ppo-acktr-gail": ("41332b78dfb50321c29bade65f9d244387f68a60", "rl"),
    "kzl/decision-transformer": ("e2d82e68f330c00f763507b3b01d774740bee53f", "rl"),
    "facebookresearch/drqv2": ("c0c650b76c6e5d22a7eb5f2edffd1440fe94f8ef", "rl"),
    "eloialonso/iris": ("24326aaaa283c527f42b89b44cfdecf2665a7a16", "rl"),
    "seungeunrho/minimalRL": ("c8efed8481e3cd40e9739cfde220a55522555b57", "rl"),
    # fresh batch, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "real-stanford/diffusion_policy": ("5ba07ac6661db573af695b419a7947ecb704690f", "rl"),
    "tinkoff-ai/CORL": ("6afec90484bbf47dee05fdf525e26a3ebe028e9b", "rl"),
    "huggingface/lerobot": ("7427f31801f944f5ec9ce53cda02862ce7d1638b", "rl"),
    # fresh batch 2, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "jurgisp/pydreamer": ("8a4ea85a925b57ddf24a221b41dfb3257f89d63a", "rl"),
    "nicklashansen/tdmpc2": ("e9f59321933cbc8e11a002b842adc7d4ffae8ff1", "rl"),
    "tonyzhaozh/act": ("742c753c0d4a5d87076c8f69e5628c79a8cc5488", "rl"),
    # gnn
    "pyg-team/pytorch_geometric": ("5c6461b2305ad068a6d61165b3c55852a11aaa41", "gnn"),
    "tkipf/pygcn": ("1600b5b748b3976413d1e307540ccc62605b4d6d", "gnn"),
    "Diego999/pyGAT": ("3664f2dc90cbf971564c0bf186dc794f12446d0c", "gnn"),
    "graphdeeplearning/benchmarking-gnns": ("b6c407712fa576e9699555e1e035d1e327ccae6c", "gnn"),
    "rampasek/GraphGPS": ("28015707cbab7f8ad72bed0ee872d068ea59c94b", "gnn"),
    # fresh batch, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "atomicarchitects/equiformer": ("64cb7866f48b9aa156e74a9d6a2ef2663b367437", "gnn"),
    "THUDM/GraphMAE": ("b14f080c919257b495e3cb6474286d5252d6a635", "gnn"),
    # fresh batch 2, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "snap-stanford/pretrain-gnns": ("8b20528a83b8869ce16451305b32c827258d19a3", "gnn"),
    "divelab/DIG": ("21476b079c9226f38915dcd082b5c2ee0cddaac8", "gnn"),
    # sciml
    "zongyi-li/fourier_neural_operator": ("00b7d86f8d74ff0af55da53eb585fe26df9c71f0", "sciml"),
    "lululxvi/deepxde": ("99b6620386d18cefb1549dddb7b7fe468cfad607", "sciml"),
    "pdebench/PDEBench": ("9754b4c0ee2bcb967233a89d1c8a6a58bf7f7bc9", "sciml"),
    "ACEsuit/mace": ("667eee4e58d23a38ff5a75122109ec2025809649", "sciml"),
    "mir-group/nequip": ("e07489d4c55535f758501f0536e76d1b59caed38", "sciml"),
    "rtqichen/torchdiffeq": ("657943acefa826ef04c025ebeb1ff5e9d60dc268", "sciml"),
    # fresh batch, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "NVlabs/FourCastNet": ("93360c1720a9f97aabf970689f21c9fad8737788", "sciml"),
    "ehoogeboom/e3_diffusion_for_molecules": ("fce07d701a2d2340f3522df588832c2c0f7e044a", "sciml"),
    # fresh batch 2, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "NVIDIA/physicsnemo": ("94b355108cfd10e253d3d41cacdc0c0112b078e4", "sciml"),
    "thuml/Transolver": ("75e0f67643806a81cd1d3f6adc88dd8c02416fe7", "sciml"),
    # course
    "bentrevett/pytorch-seq2seq": ("b3cd54c72cd6e4e63f672d334c795b4fe744ef92", "course"),
    "yunjey/pytorch-tutorial": ("0500d3df5a2a8080ccfccbc00aca0eacc21818db", "course"),
    "karpathy/nn-zero-to-hero": ("73c3fcc741f0ec104ca850b1fb0df90e7e8d4cde", "course"),
    "rasbt/deeplearning-models": ("18e046926551378cd691fd871dda0f21dcd272ab", "course"),
    "dvgodoy/PyTorchStepByStep": ("d837dec7250dae20d247634c4aba63791bd89b2f", "course"),
    "karpathy/ng-video-lecture": ("52201428ed7b46804849dea0b3ccf0de9df1a5c3", "course"),
    # fresh batch, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "Atcold/NYU-DLSP20": ("3049c83260ba05700e2ab9b7ed13cdbe5ddba0fd", "course"),
    "rasbt/machine-learning-book": ("35ab3774e8e249c43a98209d8efd94c060102003", "course"),
    # fresh batch 2, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "labmlai/annotated_deep_learning_paper_implementations": ("e6b3c8a6a2cdae4071bcde1abeaaf9a2bc37bd53", "course"),
    "udacity/deep-learning-v2-pytorch": ("c9404fc86181fc3f0906b368697268257f348535", "course"),
    # kaggle
    "jionie/Bengaliai": ("02b580dbb75f443d78c0f5bd6e4ff74e3cbbba71", "kaggle"),
    "BloodAxe/Kaggle-2020-Alaska2": ("3c1f5e8e564c9f04423beef69244fc74168f88ca", "kaggle"),
    "bilzard/kaggle-hms-public": ("7d737b0904613ae9574215e40b2be65c42a829e8", "kaggle"),
    "selimsef/dfdc_deepfake_challenge": ("89c6290490bac96b29193a4061b3db9dd3933e36", "kaggle"),
    "ditwoo/batteries": ("e182d9178782a77f4f0a8e1bae935b6bef85e203", "kaggle"),
    "paolorechia/common-lit-kaggle": ("795b53ebceb812fad9f214602957373cbd225121", "kaggle"),
    "ChristofHenkel/kaggle-landmark-2021-1st-place": ("1ddd3f676431a7639f0b8a99606235548a0983d7", "kaggle"),
    # fresh batch, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "haqishen/SIIM-ISIC-Melanoma-Classification-1st-Place-Solution": ("8250ca417635aba9b1b0f5c2afa25f1f4f0db467", "kaggle"),
    "Nischaydnk/RSNA-2023-1st-place-solution": ("77ed554f80c626195d0e18adcd8a739b2a96ef86", "kaggle"),
    # fresh batch 2, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "ybabakhin/kaggle-feedback-effectiveness-1st-place-solution": ("fe5522b0a3240485b4893cc74cb410a7b55f1e68", "kaggle"),
    "jxzly/Kaggle-American-Express-Default-Prediction-1st-solution": ("03b86f584bb61a34e31eb6343bd33ae753a92c02", "kaggle"),
    # library-examples
    "huggingface/accelerate": ("16cb6eb80dd9aa8b4df1a63ef57863e455d53b83", "library-examples"),
    "huggingface/diffusers": ("58eb52c0803ea9af3abec60841c2a093bdf1f951", "library-examples"),
    "huggingface/peft": ("5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40", "library-examples"),
    "huggingface/notebooks": ("5068b1142e8ed1e691c8b1e9f98e4473ebe55790", "library-examples"),
    "pytorch/ignite": ("de08e799cfb55a6cf4aa778575d6bad725385453", "library-examples"),
    "microsoft/DeepSpeedExamples": ("83757d9c937daabd1089a08051061706cb73900d", "library-examples"),
    "pytorch/opacus": ("4d0ebc84613d214fbfd37fbfd1390e3747a625ce", "library-examples"),
    # fresh batch, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "mlcommons/training": ("aa344c7fb900e82ed19fb94aebfed50c63ab2204", "library-examples"),
    # fresh batch 2, 2026-12-02: added unread, for a measurement on code nobody tuned on
    "NVIDIA/TransformerEngine": ("d0067d0da6cb01811b8072a7d304f0e00344ce2b", "library-examples"),
    "pytorch/torchtitan": ("b5bcd76c66d0acb1a08b176d9639425bc55e0b2a", "library-examples"),
    "mosaicml/composer": ("6405188805a0054b4551ec49e4919c54c971d0e8", "library-examples"),
    # fresh batch 3, 2026-12-02 16:40 UTC: added unread (picked and counted by a helper that read no
    # code), checked once at 4604568 before anyone read a finding
    "bowang-lab/MedSAM": ("d71e8a1a99ad751840a22a7fa3ecfb4166fb1488", "vision"),
    "uni-medical/SAM-Med3D": ("f3de1fa10da98e46f49f176773d2b1e306ba131f", "vision"),
    "lss-1138/SegRNN": ("8e869ecfdf1daab3a0ba14d1d620796c1a5d2c4f", "timeseries"),
    "selimsef/xview2_solution": ("5d0caba9c7a9c2707565a189f1a091c86d26b546", "kaggle"),
    "facebookresearch/DPR": ("a31212dc0a54dfa85d8bfa01e1669f149ac832b7", "nlp"),
    "naver/splade": ("8dcd33a054d790e74aceda25b128c1b188c5d9c1", "nlp"),
    "rmaphoh/RETFound_MAE": ("897d71c8c9b1d0ca1984370d4c4352722017b80a", "vision"),
    "jeykigung/P5": ("1fa28ba7bb3946da94677013cc88e392cfc760ca", "recsys"),
    "zyang1580/CoLLM": ("48042b168bb5aa41b42e9c89e7582b718e301556", "recsys"),
    "eloialonso/diamond": ("5bcd1599755b4f2fae8e5e079e02f0728e174965", "rl"),
    "openvla/openvla": ("c8f03f48af692657d3060c19588038c7220e9af9", "rl"),
    "XiaoxinHe/G-Retriever": ("315b0ff8a206536067602fb97e77c10f4d646d5d", "gnn"),
    "atomicarchitects/equiformer_v2": ("cf45ee209abdceaa606c9a8dce50c9c753d470b2", "sciml"),
    "baofff/U-ViT": ("ce551708dc9cde9818d2af7d84dfadfeb7bd9034", "generative"),
    "RVC-Boss/GPT-SoVITS": ("48b1a0169a28582a8984402f82cf438d3bfa6aca", "speech"),
    "SWivid/F5-TTS": ("2ae2c9bd9b64dab2cb069c4b97e5e7673c521e01", "speech"),
    "kathrinse/TabSurvey": ("454b8b2445450c9cd58b6f1c60fab3e625f58bcd", "tabular"),
    "amazon-science/tabsyn": ("cb5ac0f74ec36ee88e7a974a393dfbef50d42da7", "tabular"),
    "WZMIAOMIAO/deep-learning-for-image-processing": ("2ecf2eea2b97777bb18fe9ff458292fde5a92b7e", "course"),
    "ChristofHenkel/kaggle-birdclef2021-2nd-place": ("26438069466242e9154aacb9818926dba7ddc7f0", "kaggle"),
    "michiyasunaga/dragon": ("b21251e4482128cae9825e4c7b8ba771ab19ad5c", "gnn"),
    "luodhhh/ModernTCN": ("56a9a2c018385cd5acef015378cae7f084d1b11c", "timeseries"),
    "sail-sg/poolformer": ("a075575b8b3dc3c76ecc5c49985d156167372bfa", "vision"),
    "NVlabs/edm2": ("4bf8162f601bcc09472ce8a32dd0cbe8889dc8fc", "generative"),
    "libffcv/ffcv-imagenet": ("4dd291a122096a2032ec9fd19633e1b9aff3577d", "library-examples"),
    "microsoft/aurora": ("7fa85ffd97eb5bef15136711a796de4e8b919794", "sciml"),
    "allenai/open-instruct": ("e6c3044aa6201c8bfa4573c1b03142af599e730d", "nlp"),
    "bubbliiiing/yolov8-pytorch": ("c245eb0160316f101fc49d005068db495365ae5c", "vision"),
    "dungnb1333/SIIM-COVID19-Detection": ("982a6b12955e8f53ec3f8af46754251b1678e08c", "kaggle"),
    "TingsongYu/PyTorch-Tutorial-2nd": ("0f188c18d572e6a54f71d24b2c2e8c0fb5ea0037", "course"),
    # fresh batch 4, 2026-12-03: added unread (picked and counted by a helper that read no finding), checked once at c98e2c3
    "facebookresearch/moco": ("8976944da9c6b94cbd9158d7ebe50912aef807ef", "vision"),
    "VainF/DeepLabV3Plus-Pytorch": ("4e1087de98bc49d55b9239ae92810ef7368660db", "vision"),
    "jfzhang95/pytorch-deeplab-xception": ("9135e104a7a51ea9effa9c6676a2fcffe6a6a2e6", "vision"),
    "w86763777/pytorch-ddpm": ("f804ccbd58a758b07f79a3b9ecdfb1beb67258f6", "generative"),
    "ajbrock/BigGAN-PyTorch": ("98459431a5d618d644d54cd1e9fceb1e5045648d", "generative"),
    "yang-song/score_sde_pytorch": ("cb1f359f4aadf0ff9a5e122fe8fffc9451fd6e44", "generative"),
    "NVIDIA/BigVGAN": ("7d2b454564a6c7d014227f635b7423881f14bdac", "speech"),
    "sooftware/kospeech": ("984b5890dd53379486b2abc0165c3396eb52ad37", "speech"),
    "jadore801120/attention-is-all-you-need-pytorch": ("132907dd272e2cc92e3c10e6c4e783a87ff8893d", "nlp"),
    "huggingface/transfer-learning-conv-ai": ("d4c760731e8f062abd3d61ccdc8fa29ccb5e3485", "nlp"),
    "codertimo/BERT-pytorch": ("d10dc4f9d5a6f2ca74380f62039526eb7277c671", "nlp"),
    "CRIPAC-DIG/SR-GNN": ("e21cfa431f74c25ae6e4ae9261deefe11d1cb488", "recsys"),
    "huangtinglin/NGCF-PyTorch": ("f4e7f6960cd8cd443d5537261d30b89cf52ed52d", "recsys"),
    "aHuiWang/CIKM2020-S3Rec": ("49a890dcb516c9ed3126564495234ea74d5cd566", "recsys"),
    "sdv-dev/CTGAN": ("f4fcd21d96e291fb1d6b7a14b83236927560b81e", "tabular"),
    "Qwicen/node": ("3bae6a8a63f0205683270b6d566d9cfa659403e4", "tabular"),
    "DAMO-DI-ML/NeurIPS2023-One-Fits-All": ("9f3875dbba9f52ee534ac0902572502746f3b29d", "timeseries"),
    "thuml/Anomaly-Transformer": ("b0ee470c8012bff857fb600462aec6209c4a18d9", "timeseries"),
    "sfujim/TD3": ("34770ccdcb51df6f6c7d85c1ba7e40d71b940d16", "rl"),
    "Kaixhin/Rainbow": ("1745b184c3dfc03d4ffa3ce2342ced9996b39a60", "rl"),
    "weihua916/powerful-gnns": ("9a2ce8ac3e99278307093a464a95caf0fb04b602", "gnn"),
    "PetarV-/DGI": ("61baf67d7052905c77bdeb28c22926f04e182362", "gnn"),
    "FAIR-Chem/fairchem": ("31c096399b82ff37cb4a36287efdfe1c9d84513c", "sciml"),
    "gcorso/DiffDock": ("b4704d94de74d8cb2acbe7ec84ad234c09e78009", "sciml"),
    "MorvanZhou/PyTorch-Tutorial": ("dbe154a9e56635e51c6b0c2ccea8ae36cfb585a7", "course"),
    "sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning": ("cc9c7e2f4017938d414178d3781fed8dbe442852", "course"),
    "bestfitting/kaggle": ("fd2ac94fba182182fd86b8e8d6afec9b4a0408e3", "kaggle"),
    "pudae/kaggle-hpa": ("3e7888cadaa18403231136800bfd1ac324d6db66", "kaggle"),
    "pytorch/torchtune": ("bd2a0fc7c31430972728494fa01aaeeb0ebf1ba1", "library-examples"),
    "facebookresearch/fairscale": ("146f160241651e1211c4247979f159a4ef43b54a", "library-examples"),
    # fresh batch 5, 2026-12-03 16:10 UTC: added unread (picked by a helper that ran no check and read no
    # finding), checked once at 27cde74 before anyone read a finding
    "princeton-vl/RAFT": ("2888e15a51fa41140771d3f498ed8023cff098d1", "vision"),
    "hkchengrex/XMem": ("f3b841d50df058910bbf690229ddc15fb1aef7d6", "vision"),
    "IDEA-Research/DAB-DETR": ("723ddb80e95dbd3c9a2e4ef68c1e0fa9319167cf", "vision"),
    "OpenGVLab/VideoMAEv2": ("29eab1e8a588d1b3ec0cdec7b03a86cca491b74b", "vision"),
    "apple/ml-fastvit": ("8af5928238cab99c45f64fc3e4e7b1516b8224ba", "vision"),
    "mit-han-lab/efficientvit": ("de7d7733cc0329f391b33f1f459271562ec27bd5", "vision"),
    "facebookresearch/flow_matching": ("11568d37f8d5a080e12aa7b5305d9c35ae07d136", "generative"),
    "LTH14/rcg": ("0c4433c1d7fed93ed0dc81a6bde2acfe335d3798", "generative"),
    "dome272/VQGAN-pytorch": ("aa648485da07fd7ebe6f85da2fdbae69db329c58", "generative"),
    "myshell-ai/MeloTTS": ("209145371cff8fc3bd60d7be902ea69cbdb7965a", "speech"),
    "FunAudioLLM/CosyVoice": ("ace7c47f41bbd303aa6bf1ea80e6f9fbd595cd40", "speech"),
    "facebookresearch/audiocraft": ("896ec7c47f5e5d1e5aa1e4b260c4405328bf009d", "speech"),
    "NATSpeech/NATSpeech": ("2e7084e4c76ee165de8d6ff7dacf6011514fbe7c", "speech"),
    "YuanGongND/cav-mae": ("68fe8c2a3917dc2926e41f796bfdcb331a64b42c", "speech"),
    "h2oai/h2o-llmstudio": ("a4971c11ed2c93e531607670df7ae9cb673936b4", "nlp"),
    "OpenNMT/OpenNMT-py": ("97111d97551c24857076a4102eabdb468b35cff4", "nlp"),
    "facebookresearch/FiD": ("fe769f30e3714e22476910ee39ea0054dd7921de", "nlp"),
    "thuml/Nonstationary_Transformers": ("c4ec40675d11d50b3d9923657f408d0db6f90f56", "timeseries"),
    "Secilia-Cxy/SOFTS": ("f5d35fd7c3e716b6383ce6d3cc42c131e32c3c44", "timeseries"),
    "wanghq21/MICN": ("370c69b841d72246556ca05dd23163c560c22b5a", "timeseries"),
    "dauparas/ProteinMPNN": ("8907e6671bfbfc92303b5f79c4b5e6ce47cdef57", "sciml"),
    "soda-inria/tabicl": ("8f1aa2098c894ab91dba15209cf2002ba4be6c6c", "tabular"),
    "Toni-SM/skrl": ("c29ced630e83ab32304dc8a3de241a70d3bc5746", "rl"),
    "leggedrobotics/rsl_rl": ("c281c32e5746e75570c1a29bfa78bca0200cc5ff", "rl"),
    "ARISE-Initiative/robomimic": ("d309eaecc18acf4152a830a895a6984b8ac71b05", "rl"),
    "optuna/optuna-examples": ("2e0b10bc54501e801687e114de3cbe1b6d2407dc", "library-examples"),
    "datawhalechina/thorough-pytorch": ("80cdfceb31e37266cfe6fe9e867445bf711f4afa", "course"),
    "Coder-Yu/SELFRec": ("5b0229423cb1c727e85a704d63e460368c8b9dde", "recsys"),
    "qitianwu/SGFormer": ("3578e101c701491ce068bf26a9b029d2134903be", "gnn"),
    "kozodoi/Kaggle_Leaf_Disease_Classification": ("5b325fb598e943f8285525ad2101110e53d1bba5", "kaggle"),
    # targeted 2026-12-03: found by searching for real AMP211/AMP215 instances (read); ADLCV_report2 at
    # its `hugo` branch, where the Accelerate training script is
    "clarachristiansen/ADLCV_report2": ("bea0f3a6e9a53bbe255216531def69587aafa737", "course"),
    "XYPB/SIFT_DBT": ("bcc16a5b926db7b15f2631be614484d9da8217c5", "vision"),
    "XYPB/GMR-Conv": ("f232423294c5eba6eb9913b7e293bfc9465bdaad", "vision"),
    # targeted 2026-12-03: AMP214 (a float16 FSDP1 policy with a plain GradScaler) and AMP213 (read)
    "licheng2018/gpt_training": ("c355d18e7994750c1c1bedda94b9acd6a8c55899", "nlp"),
    "drinkingcoder/FlowFormer-Official": ("6ba7ea82b45394d3a7a25808399695427c9febd8", "vision"),
    "gangweiX/IGEV": ("e61a6756984844beb035ec9666ea70e05dcc6b93", "vision"),
    # fresh batch 6, 2026-12-04 03:40 UTC: added unread (picked by a helper that ran no check and read no
    # finding), checked once at the commit that follows values into returned values, before anyone read a finding
    "datawhalechina/happy-llm": ("f115ef3788bf8726b6ff65e823e03a538f270e6b", "course"),
    "DLLXW/baby-llama2-chinese": ("98a20dbb35e686a62188f61f479809cb2d4f8d6e", "nlp"),
    "Hannibal046/nanoRWKV": ("3719d13f54955115e41c894194e81356d9e56b81", "nlp"),
    "Alibaba-MIIL/ASL": ("8c9e0bd8d5d450cf19093363fc08aa7244ad4408", "vision"),
    "hustvl/YOLOP": ("8d8f68df318c71f01d6f813c024df646c7d1978f", "vision"),
    "MzeroMiko/VMamba": ("2ed52ead062a51a64521ed3871d52914bf532876", "vision"),
    "tysam-code/hlb-CIFAR10": ("993965202fc4dc05b699a39db33c00f1c7f647fd", "vision"),
    "lucidrains/stylegan2-pytorch": ("ce7f830bc10d037cddc75d6166904baf07945cf6", "generative"),
    "tencent-ailab/IP-Adapter": ("62e4af9d0c1ac7d5f8dd386a0ccf2211346af1a2", "generative"),
    "PixArt-alpha/PixArt-alpha": ("cac2fd3b4544cf7620d8fbbf8b19d97ffcb85892", "generative"),
    "NVIDIA/mellotron": ("d5362ccae23984f323e3cb024a01ec1de0493aff", "speech"),
    "NVIDIA/flowtron": ("d149bc466b8325026aeb68aa2fef24337e7463b2", "speech"),
    "yl4579/PL-BERT": ("4198635d7cec127c3db43b8d7ed5d12faec30128", "speech"),
    "lucidrains/audiolm-pytorch": ("d65fd151075d304bc7b28dfcb736e179b6020fca", "speech"),
    "thuml/TimeXer": ("76011909357972bd55a27adba2e1be994d81b327", "timeseries"),
    "YeWR/EfficientZero": ("468bb0309f6d5a632a53da9c7d329f88fc9ebf8e", "rl"),
    "nikhilbarhate99/PPO-PyTorch": ("728cce83d7ab628fe2634eabcdf3239997eb81dd", "rl"),
    "rbiswasfc/kaggle-feedback-effectiveness-3rd-place-solution": ("47e0464dc7c78cb29f7aa3ba7b0e3c36bb8d6dfa", "kaggle"),
    "darraghdog/kaggle-hms-3rd-place-solution": ("aff36672055d3db2bb8358fadc11b357eb0de589", "kaggle"),
    "FNoaGut/child-mind-institute-detect-sleep-states-3rd-place-solution": ("6c8a4d5aa6bea636db602927c27dfd91b8324798", "kaggle"),
    "horovod/horovod": ("2626dc87a3a8eb8fb7d2216198ce45bce0f9e65a", "library-examples"),
    "wandb/examples": ("5cab88702fc51edfb4afc79a1de89e9acf6cb605", "library-examples"),
    "microsoft/onnxruntime-training-examples": ("ef9a7777304b8ce86433e75d290cdd10ff01a966", "library-examples"),
    "westlake-repl/IDvs.MoRec": ("ce372cfc523c52458fa0267c9834d1be488e026a", "recsys"),
    "HKUDS/SSLRec": ("7597c31ce3f78c7497918d886b90df6d4d02cad5", "recsys"),
    "bubbliiiing/unet-pytorch": ("5bcd6b4c832648beed1b92e78ed1e85c56343eca", "course"),
    "Shujun-He/RibonanzaNet": ("efebd44e79615fb23f685971875e8903b04cbdce", "sciml"),
    "txie-93/cgcnn": ("f42ab233c4ee0c416879d6bc2d22a264418413ad", "sciml"),
    "qitianwu/NodeFormer": ("5390b6908326905b2eb840f65a70b0f4082aef43", "gnn"),
    "yandex-research/tabular-dl-num-embeddings": ("0ceea52bb41d1446dd7c37c58f71f52b654d8325", "tabular"),
}


def half_of(repo: str) -> str:
    """The fixed split: dev when sha256(owner/name)'s first byte is even."""
    return "dev" if hashlib.sha256(repo.encode()).digest()[0] % 2 == 0 else "scoring"


def findings(root: str, repo: str, commit: str) -> list[dict]:
    """ampfix's loop findings on one checkout: dicts with path (relative), line, code, fix, message."""
    folder = os.path.abspath(checkout_dir(root, repo, commit))
    if not os.path.isdir(folder):
        raise SystemExit(f"no checkout {folder}: build it with --extract-from MIRRORS")
    command = [
        sys.executable, "-m", "ampfix", "check", folder, "--isolated", "--no-cache", "--unsafe-fixes", "--preview", "--extend-select", "AMP501",
        "--output-format", "json", "--exit-zero", "--quiet",
    ]
    # run from the checkout, as its user would (the project root is the checkout's)
    env = {**os.environ, "PYTHONPATH": os.path.join(HERE, "..") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(command, capture_output=True, text=True, cwd=folder, env=env)
    if done.returncode not in (0, 1):
        raise SystemExit(f"ampfix failed on {folder} (exit {done.returncode}):\n{done.stderr}")
    out = []
    for record in json.loads(done.stdout or "[]"):
        if not record["code"].startswith(LOOP_CODES):
            continue
        fix = record.get("fix")
        out.append({
            "repo": repo,
            "path": os.path.relpath(os.path.join(folder, record["filename"]), folder).replace(os.sep, "/"),
            "line": record["location"]["row"],
            "code": record["code"],
            "fix": fix["applicability"] if fix else "none",
            "message": record["message"],
            "half": half_of(repo),
            **({"cell": record["cell"]} if record.get("cell") is not None else {}),  # notebooks: row is in the cell
        })
    return out


def key(entry: dict) -> tuple:
    return entry["repo"], entry["path"], entry.get("cell", 0), entry["line"], entry["code"]


def labelled_positives(labels: dict) -> set:
    return {
        (l["repo"], l["path"], 0, line, l["code"])
        for l in labels["labels"] if not l["code"].startswith("!")
        for line in range(l["line"], l["end_line"] + 1)
    }


def verdict_of(entry: dict | None) -> str:
    verdict = entry["verdict"] if entry else "untriaged"
    return verdict if verdict in VERDICTS else "untriaged"


def miss_found(miss: dict, found: list[dict]) -> bool:
    last = miss.get("end_line", miss["line"])
    return any(
        f["repo"] == miss["repo"] and f["path"] == miss["path"] and f["code"] == miss["code"]
        and f.get("cell", 0) == miss.get("cell", 0)
        and miss["line"] <= f["line"] <= last
        for f in found
    )


def show(tag: str, entry: dict, extra: str = "") -> None:
    where = f"{entry['path']}:" + (f"cell {entry['cell']}:" if "cell" in entry else "") + str(entry["line"])
    print(f"  {tag:<9}{entry['repo']} {where} {entry['code']} {extra}".rstrip())


def compare(found: list[dict], triage: list[dict], expected: set, misses: list[dict], half: str, listed: bool) -> int:
    """Print one half's differences and figures; return the number of its untriaged findings."""
    triaged = {key(t): t for t in triage}
    now = {key(f): f for f in found}
    new = [f for k, f in sorted(now.items()) if k not in triaged and k not in expected]
    silenced = [t for k, t in sorted(triaged.items()) if k not in now]
    changed = [
        (f, triaged[k]) for k, f in sorted(now.items())
        if k in triaged and (f["fix"] == "none") != (triaged[k]["fix"] == "none")
    ]
    if listed:
        for f in new:
            show("NEW", f, f"(fix: {f['fix']}) {f['message'][:110]}")
        for t in silenced:
            show("SILENCED", t, f"(was {t['verdict']}: {t['reason'][:90]})")
        for f, t in changed:
            show("FIX", f, f"triaged {t['fix']}, now {f['fix']}")
    by_code: dict[str, Counter] = {}
    for k, f in now.items():
        verdict = "TP" if k in expected else verdict_of(triaged.get(k))
        counts = by_code.setdefault(f["code"], Counter())
        counts[verdict] += 1
        counts["harmful"] += k in triaged and f["fix"] != "none" and triaged[k]["fix"] == "harmful"
    for t in silenced:
        by_code.setdefault(t["code"], Counter())["silenced " + verdict_of(t)] += 1
    total = Counter()
    print(f"[{half}] per rule: found (TP/FP/debatable/untriaged), precision TP/(TP+FP), harmful fixes, silenced")
    for code, counts in sorted(by_code.items()):
        total.update(counts)
        print("  " + row(code, counts))
    print("  " + row("all", total))
    known = [t for t in triage if t["verdict"] == "TP"]
    caught = sum(key(t) in now for t in known)
    misses_found = sum(miss_found(m, found) for m in misses)
    denominator = len(known) + len(misses)
    recall = f"{(caught + misses_found) / denominator:.1%}" if denominator else "n/a"
    print(f"  recall on known bugs: {caught + misses_found}/{denominator} ({recall}; "
          f"{caught}/{len(known)} triaged TP still found, {misses_found}/{len(misses)} misses found); "
          f"new {len(new)}, silenced {len(silenced)}, fix changed {len(changed)}")
    return len(new) + sum(verdict_of(triaged.get(k)) == "untriaged" for k in now if k in triaged)


def row(code: str, counts: Counter) -> str:
    found = sum(counts[v] for v in (*VERDICTS, "untriaged"))
    judged = counts["TP"] + counts["FP"]
    precision = f"{counts['TP'] / judged:.2f} ({counts['TP']}/{judged})" if judged else "n/a"
    silenced = ", ".join(f"{counts['silenced ' + v]} {v}" for v in (*VERDICTS, "untriaged") if counts["silenced " + v])
    return (f"{code:<7} {found:>4} ({counts['TP']}/{counts['FP']}/{counts['debatable']}/{counts['untriaged']})"
            f"  precision {precision:<14} harmful {counts['harmful']}"
            + (f"  silenced: {silenced}" if silenced else ""))


def diff_baseline(found: list[dict], path: str, halves: tuple[str, ...], repos: dict, listed: bool) -> None:
    """ruff-ecosystem style: findings added, removed and changed against a saved snapshot, per half and rule."""
    with open(path, encoding="utf-8") as handle:
        saved = json.load(handle)
    before = {key(f): f for f in saved["findings"] if f["repo"] in repos}
    now = {key(f): f for f in found}
    print(f"against {path} (ampfix {saved.get('ampfix', '?')}):")
    for half in halves:
        added = [now[k] for k in sorted(now.keys() - before.keys()) if now[k]["half"] == half]
        removed = [before[k] for k in sorted(before.keys() - now.keys()) if before[k].get("half", half_of(k[0])) == half]
        changed = [
            (before[k], now[k]) for k in sorted(now.keys() & before.keys())
            if now[k]["half"] == half and (now[k]["fix"], now[k]["message"]) != (before[k]["fix"], before[k]["message"])
        ]
        per_rule: dict[str, Counter] = {}
        for what, entries in (("+", added), ("-", removed), ("~", [n for _, n in changed])):
            for entry in entries:
                per_rule.setdefault(entry["code"], Counter())[what] += 1
        print(f"[{half}] +{len(added)} -{len(removed)} ~{len(changed)}  per rule: " + (", ".join(
            f"{code} +{c['+']} -{c['-']} ~{c['~']}" for code, c in sorted(per_rule.items())) or "no change"))
        if half == "dev" or listed:
            for entry in added:
                show("+", entry, f"(fix: {entry['fix']}) {entry['message'][:110]}")
            for entry in removed:
                show("-", entry, f"(fix: {entry['fix']}) {entry['message'][:110]}")
            for old, new in changed:
                show("~", new, f"fix {old['fix']} -> {new['fix']}; {new['message'][:100]}")


def ampfix_version() -> str:
    """The last commit of the ampfix code that runs (this worktree's ampfix/), '-dirty' with uncommitted changes there."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", HERE, *args], capture_output=True, text=True).stdout.strip()
    commit = git("log", "-1", "--format=%h", "--", os.path.join(HERE, "..", "ampfix")) or "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--", os.path.join(HERE, "..", "ampfix")) else "")


def save(found: list[dict], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    entries = sorted(found, key=key)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('{"ampfix": ' + json.dumps(ampfix_version()) + ', "findings": [\n')
        handle.write(",\n".join(json.dumps(e, ensure_ascii=False) for e in entries) + "\n]}\n")
    print(f"saved {len(entries)} findings to {path}")


def updated_triage(everything: list[dict], found: list[dict], repos: dict, expected: set) -> list[dict]:
    """The triage with '?' stubs for new findings and the silenced mark set or cleared (never an entry dropped)."""
    now = {key(f): f for f in found}
    known = {key(t) for t in everything}
    out = []
    for entry in everything:
        entry = dict(entry)
        if entry["repo"] in repos:
            if key(entry) in now:
                entry.pop("status", None)
            else:
                entry["status"] = "silenced"
        out.append(entry)
    for k, f in sorted(now.items()):
        if k not in known and k not in expected:
            out.append({**{n: f[n] for n in ("repo", "path", "cell", "line", "code") if n in f}, "verdict": "?",
                        "fix": "none" if f["fix"] == "none" else "?", "reason": f["message"]})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkouts", default=DEFAULT_CHECKOUTS, help=f"folder of extracted checkouts ({DEFAULT_CHECKOUTS})")
    parser.add_argument("--extract-from", help="folder of git snapshots (owner+name/repo) to extract missing checkouts from")
    parser.add_argument("--half", choices=(*HALVES, "all"), default="all", help="which half of the ecosystem (default all)")
    parser.add_argument("--dev", action="store_true", help="the labelled dev corpus instead of the ecosystem repositories")
    parser.add_argument("--triage", help="triage file (default: bench/triage/ecosystem.json or dev.json)")
    parser.add_argument("--misses", default=MISSES, help="known bugs no finding reported (default bench/triage/misses.json)")
    parser.add_argument("--write-new", action="store_true",
                        help="add '?' stubs for untriaged findings and set/clear the silenced mark in the triage file")
    parser.add_argument("--save", metavar="FILE", help="write the findings snapshot (JSON) to FILE")
    parser.add_argument("--baseline", metavar="FILE", help="print findings added/removed/changed against a saved snapshot")
    parser.add_argument("--list-scoring", action="store_true",
                        help="list scoring-half findings one by one (only once a change is done)")
    parser.add_argument("--repo", action="append", help="only these repositories")
    args = parser.parse_args()

    labels = {"labels": []}
    if args.dev:
        with open(DEFAULT_LABELS, encoding="utf-8") as handle:
            labels = json.load(handle)
        repos = labels["repos"]
        halves = ("dev",)
    else:
        halves = HALVES if args.half == "all" else (args.half,)
        repos = {r: commit for r, (commit, _domain) in ECOSYSTEM.items() if half_of(r) in halves}
    if args.repo:
        repos = {r: c for r, c in repos.items() if r in args.repo}
    if args.extract_from:
        extract(args.checkouts, args.extract_from, {"repos": repos})
    triage_path = args.triage or os.path.join(TRIAGE, "dev.json" if args.dev else "ecosystem.json")
    everything = load_json(triage_path)
    misses = [m for m in load_json(args.misses) if m["repo"] in repos]
    found = [f for repo, commit in sorted(repos.items()) for f in findings(args.checkouts, repo, commit)]
    if args.dev:
        for f in found:
            f["half"] = "dev"
    expected = labelled_positives(labels)
    untriaged = 0
    for half in halves:
        in_half = lambda e, half=half: args.dev or half_of(e["repo"]) == half  # noqa: E731
        untriaged += compare(
            [f for f in found if in_half(f)], [t for t in everything if t["repo"] in repos and in_half(t)],
            expected, [m for m in misses if in_half(m)], half, listed=half == "dev" or args.list_scoring,
        )
    if args.save:
        save(found, args.save)
    if args.baseline:
        diff_baseline(found, args.baseline, halves, repos, args.list_scoring)
    if args.write_new:
        write_triage(triage_path, updated_triage(everything, found, repos, expected))
    return 1 if untriaged else 0


def load_json(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_triage(path: str, entries: list[dict]) -> None:
    entries = sorted(entries, key=key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[\n" + ",\n".join(json.dumps(e, ensure_ascii=False) for e in entries) + "\n]\n")


if __name__ == "__main__":
    sys.exit(main())
