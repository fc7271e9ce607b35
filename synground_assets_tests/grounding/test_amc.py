"""The `amc` objective against an independent computation written here, in the official code's
order (AMC-grounding models/model_pretrain.py, models/xbert.py), on a tiny ALBEF without dropout
and with every random draw of the step fixed; plus its pieces, its defaults and an exact resume."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from synground_assets.adapters.grounding_albef import AlbefGroundingModel
from synground_assets.adapters.grounding_blip import BlipGroundingModel
from synground_assets.grounding.amc import AmcObjective, FeatureQueue, StepDraws, mask_tokens
from synground_assets.grounding.config import TrainConfig
from synground_assets.grounding.distributed import World
from synground_assets.grounding.loader import make_batch
from synground_assets.grounding.optim import make_optimizer
from synground_assets.grounding.train import prepare_model, train
from synground_assets.tiny.grounding import build_tiny_albef
from synground_assets_tests.grounding.conftest import shapes_triplets

QUEUE = 8


@pytest.fixture(scope="module")
def albef_folder(tmp_path_factory):
    return build_tiny_albef(tmp_path_factory.mktemp("tiny-albef"), seed=0)


def without_dropout(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


@pytest.fixture
def setup(albef_folder):
    torch.manual_seed(0)
    model = without_dropout(AlbefGroundingModel.from_pretrained(albef_folder)).train()
    config = TrainConfig(queue_size=QUEUE, objective="amc", gradcam_layer=model.gradcam_layer)
    objective = AmcObjective(config, model, forwards_per_epoch=10)
    triplets = shapes_triplets(2, first_seed=3)[:4]
    batch = make_batch(model.preprocessor(), triplets, list(range(len(triplets))), None, 64)
    ids = batch.inputs.input_ids
    generator = torch.Generator().manual_seed(5)
    draws = StepDraws(
        mlm_positions=torch.rand(ids.shape, generator=generator) < 0.5,
        mask_replaced=torch.rand(ids.shape, generator=generator) < 0.5,
        random_replaced=torch.rand(ids.shape, generator=generator) < 0.5,
        random_tokens=torch.randint(model.vocab_size, ids.shape, generator=generator),
        negative_images=torch.tensor([1, 0, 3, 2])[: len(ids)],
        negative_texts=torch.tensor([2, 3, 0, 1])[: len(ids)],
    )
    return model, config, objective, batch, draws


def reference_losses(model, momentum_model, queues, config, batch, draws, alpha) -> dict[str, torch.Tensor]:
    """The official forward, step by step, on copies of the model, its momentum model and queues."""
    albef, albef_m = model.model, momentum_model.model
    image, ids, mask = batch.inputs.pixel_values, batch.inputs.input_ids, batch.inputs.attention_mask
    bs = len(ids)
    with torch.no_grad():
        albef.temp.clamp_(0.001, 0.5)
    image_embeds = albef.visual_encoder(image)
    image_feat = F.normalize(albef.vision_proj(image_embeds[:, 0, :]), dim=-1)
    text_embeds = albef.text_encoder(ids, mask, mode="text")
    text_feat = F.normalize(albef.text_proj(text_embeds[:, 0, :]), dim=-1)
    with torch.no_grad():
        pairs = [(albef.visual_encoder, albef_m.visual_encoder), (albef.vision_proj, albef_m.vision_proj),
                 (albef.text_encoder, albef_m.text_encoder), (albef.text_proj, albef_m.text_proj)]
        for online, shadow in pairs:
            for p, p_m in zip(online.parameters(), shadow.parameters()):
                p_m.data = p_m.data * config.momentum + p.data * (1.0 - config.momentum)
        image_embeds_m = albef_m.visual_encoder(image)
        image_feat_m = F.normalize(albef_m.vision_proj(image_embeds_m[:, 0, :]), dim=-1)
        image_feat_all = torch.cat([image_feat_m.t(), queues.image_queue.clone().detach()], dim=1)
        text_output_m = albef_m.text_encoder(ids, mask, mode="text")
        text_feat_m = F.normalize(albef_m.text_proj(text_output_m[:, 0, :]), dim=-1)
        text_feat_all = torch.cat([text_feat_m.t(), queues.text_queue.clone().detach()], dim=1)
        sim_i2t_m, sim_t2i_m = image_feat_m @ text_feat_all / albef.temp, text_feat_m @ image_feat_all / albef.temp
        sim_targets = torch.zeros(sim_i2t_m.size())
        sim_targets.fill_diagonal_(1)
        sim_i2t_targets = alpha * F.softmax(sim_i2t_m, dim=1) + (1 - alpha) * sim_targets
        sim_t2i_targets = alpha * F.softmax(sim_t2i_m, dim=1) + (1 - alpha) * sim_targets
    sim_i2t, sim_t2i = image_feat @ text_feat_all / albef.temp, text_feat @ image_feat_all / albef.temp
    loss_i2t = -torch.sum(F.log_softmax(sim_i2t, dim=1) * sim_i2t_targets, dim=1).mean()
    loss_t2i = -torch.sum(F.log_softmax(sim_t2i, dim=1) * sim_t2i_targets, dim=1).mean()
    loss_ita = (loss_i2t + loss_t2i) / 2
    # Positive pairs with the layer's cross-attention captured; negatives from the fixed draws.
    with albef.capture_cross_attention(config.gradcam_layer) as captured:
        output_pos = albef.text_encoder(None, mask, encoder_hidden_states=image_embeds, mode="fusion",
                                        encoder_embeds=text_embeds)
    fmaps = captured[0]
    image_embeds_neg = torch.stack([image_embeds[draws.negative_images[b]] for b in range(bs)])
    text_embeds_neg = torch.stack([text_embeds[draws.negative_texts[b]] for b in range(bs)])
    text_atts_neg = torch.stack([mask[draws.negative_texts[b]] for b in range(bs)])
    output_neg = albef.text_encoder(None, torch.cat([mask, text_atts_neg]),
                                    encoder_hidden_states=torch.cat([image_embeds_neg, image_embeds]), mode="fusion",
                                    encoder_embeds=torch.cat([text_embeds, text_embeds_neg]))
    vl_output = albef.itm_head(torch.cat([output_pos[:, 0, :], output_neg[:, 0, :]]))
    itm_labels = torch.cat([torch.ones(bs, dtype=torch.long), torch.zeros(2 * bs, dtype=torch.long)])
    loss_itm = F.cross_entropy(vl_output, itm_labels)
    # AMC: the gradient of the raw match logit w.r.t. the attention, second order.
    heads, rows = fmaps.shape[1], model.patch_grid()[0]
    one_hot = torch.zeros_like(vl_output[:bs])
    one_hot[:, 1] = 1
    grad = torch.autograd.grad(outputs=vl_output[:bs], inputs=fmaps, grad_outputs=one_hot, create_graph=True)[0]
    text_mask = mask.view(bs, 1, -1, 1, 1)
    gradcam = (fmaps[:, :, :, 1:].reshape(bs, heads, -1, rows, rows) * text_mask
               * grad[:, :, :, 1:].clamp(0).reshape(bs, heads, -1, rows, rows) * text_mask)
    gradcam = F.relu(gradcam.mean(1).mean(1)).view(bs, -1)
    gradcam = gradcam - gradcam.min(dim=1, keepdim=True)[0]
    gradcam = gradcam / (gradcam.max(dim=1, keepdim=True)[0] + 1e-7)
    size = batch.masks.shape[-1]
    gradcam = F.interpolate(gradcam.view(bs, 1, rows, rows), (size, size), mode="bilinear",
                            align_corners=False).squeeze(1)
    box = batch.masks
    inside, outside = gradcam * box, gradcam * (1 - box)
    loss_mean = torch.max(torch.tensor([0.0]), outside.sum() / (1 - box).sum() - inside.sum() / box.sum() + 0.1)
    loss_max = torch.max(torch.tensor([0.0]),
                         outside.view(bs, -1).max(1)[0] - inside.view(bs, -1).max(1)[0] + 0.5).mean()
    # MLM: mask by the fixed draws, as the official `mask` does.
    input_ids, labels = ids.clone(), ids.clone()
    masked = draws.mlm_positions.clone()
    masked[input_ids == model.pad_token_id] = False
    masked[input_ids == model.cls_token_id] = False
    labels[~masked] = -100
    replaced = draws.mask_replaced & masked
    input_ids[replaced] = model.mask_token_id
    randomised = draws.random_replaced & masked & ~replaced
    input_ids[randomised] = draws.random_tokens[randomised]
    with torch.no_grad():
        hidden_m = albef_m.text_encoder(input_ids, mask, encoder_hidden_states=image_embeds_m, mode="multi_modal")
        logits_m = albef_m.text_encoder.mlm_logits(hidden_m)
    prediction_scores = albef.text_encoder.mlm_logits(
        albef.text_encoder(input_ids, mask, encoder_hidden_states=image_embeds, mode="multi_modal"))
    masked_lm_loss = nn.CrossEntropyLoss()(prediction_scores.view(-1, model.vocab_size), labels.view(-1))
    loss_distill = -torch.sum(F.log_softmax(prediction_scores, dim=1) * F.softmax(logits_m, dim=-1), dim=-1)
    loss_mlm = (1 - alpha) * masked_lm_loss + alpha * loss_distill[labels != -100].mean()
    loss_mean = loss_mean.squeeze(0)  # (1,) in the official code: torch.max with tensor([0.])
    total = loss_mlm + loss_ita + loss_itm + 0.2 * loss_mean + 0.8 * loss_max
    return {"loss": total, "mlm": loss_mlm, "itc": loss_ita, "itm": loss_itm, "amc_mean": loss_mean,
            "amc_max": loss_max}


def test_a_step_with_fixed_draws_matches_the_official_computation(setup):
    model, config, objective, batch, draws = setup
    reference_model = copy.deepcopy(model)
    reference_momentum = copy.deepcopy(objective.momentum_model)
    reference_queues = copy.deepcopy(objective.queues)
    forward_index = 4  # alpha 0.4 * 4 / 10 in the ramp of the first epoch
    losses = objective(model, batch, torch.Generator().manual_seed(0), forward_index, draws)
    expected = reference_losses(reference_model, reference_momentum, reference_queues, config, batch, draws, 0.4 * 0.4)
    assert draws.mlm_positions.any() and (mask_tokens(batch.inputs.input_ids, draws, 1, 0, 2)[1] != -100).any()
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert losses["amc_max"] > 0  # a random model: the margins are not met, so AMC has a gradient
    losses["loss"].backward()
    expected["loss"].backward()
    reference_parameters = dict(reference_model.named_parameters())
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        torch.testing.assert_close(parameter.grad, reference_parameters[name].grad, rtol=1e-4, atol=1e-6, msg=name)
    # The momentum copies and the queue moved as the official ones did.
    for (name, shadow), expected_shadow in zip(objective.momentum_model.named_parameters(),
                                               reference_momentum.parameters()):
        torch.testing.assert_close(shadow, expected_shadow, rtol=0, atol=0, msg=name)
    image_feat_m = reference_momentum.model.image_feature(
        reference_momentum.model.visual_encoder(batch.inputs.pixel_values))
    torch.testing.assert_close(objective.queues.image_queue[:, : len(image_feat_m)], image_feat_m.t())
    assert int(objective.queues.queue_ptr_img) == len(image_feat_m)


def test_the_amc_gradient_is_second_order(setup):
    """Without create_graph the AMC terms would carry no gradient to the weights."""
    model, config, objective, batch, draws = setup
    no_amc = AmcObjective(TrainConfig(queue_size=QUEUE, objective="amc", amc_mean_weight=0.0, amc_max_weight=0.0,
                                      gradcam_layer=model.gradcam_layer), copy.deepcopy(model), 10)
    with_amc = objective(model, batch, torch.Generator(), 0, draws)
    without = no_amc(no_amc.momentum_model, batch, torch.Generator(), 0, draws)
    assert "amc_max" not in without and torch.isclose(with_amc["itm"], without["itm"])
    (gradient,) = torch.autograd.grad(with_amc["amc_max"], [model.model.visual_encoder.patch_embed.proj.weight])
    assert gradient.abs().sum() > 0


def test_mask_tokens_follows_80_10_10_and_skips_pad_and_cls():
    ids = torch.tensor([[2, 10, 11, 12, 13, 0]])  # [CLS]=2, pad=0
    draws = StepDraws(mlm_positions=torch.tensor([[1, 1, 1, 1, 0, 1]]).bool(),
                      mask_replaced=torch.tensor([[1, 1, 0, 0, 1, 1]]).bool(),
                      random_replaced=torch.tensor([[1, 0, 1, 0, 1, 1]]).bool(),
                      random_tokens=torch.full((1, 6), 7))
    masked, labels = mask_tokens(ids, draws, mask_token_id=4, pad_token_id=0, cls_token_id=2)
    assert masked.tolist() == [[2, 4, 7, 12, 13, 0]]  # [MASK], random, kept (masked but not replaced), untouched
    assert labels.tolist() == [[-100, 10, 11, 12, -100, -100]]


def test_the_queues_wrap_around_with_separate_pointers():
    queues = FeatureQueue(dim=2, size=5)
    first, second = torch.arange(6.0).view(3, 2), 10 + torch.arange(6.0).view(3, 2)
    queues.push(first, first)
    assert int(queues.queue_ptr_img) == 3
    queues.push(second, 2 * second)
    # The second batch fills columns 3, 4, then wraps to column 0.
    assert queues.image_queue.t().tolist() == [[14, 15], [2, 3], [4, 5], [10, 11], [12, 13]]
    assert torch.equal(queues.text_queue.t()[0], torch.tensor([28.0, 30.0]))
    assert int(queues.queue_ptr_img) == int(queues.queue_ptr_txt) == 1
    with pytest.raises(ValueError, match="raise queue_size"):
        queues.push(torch.zeros(6, 2), torch.zeros(6, 2))


def test_alpha_ramps_over_the_first_epoch_only(setup):
    _, _, objective, _, _ = setup
    assert [objective.alpha(i) for i in (0, 5, 10, 25)] == pytest.approx([0.0, 0.2, 0.4, 0.4])


def test_albef_defaults_to_amc_blip_to_its_own(albef_folder, tiny_blip_folder):
    albef = AlbefGroundingModel.from_pretrained(albef_folder)
    assert prepare_model(TrainConfig(), albef, World()).objective == "amc"
    blip = BlipGroundingModel.from_pretrained(tiny_blip_folder)
    assert prepare_model(TrainConfig(), blip, World()).objective == "itc-itm-amc"
    with pytest.raises(ValueError, match="objective must be one of amc, itc-itm-amc"):
        TrainConfig(objective="albef")


def test_amc_weight_decay_exempts_only_1d_tensors_and_biases(setup):
    model, config, objective, _, _ = setup
    optimizer = make_optimizer(config, model, objective)
    decayed, exempt = (group["params"] for group in optimizer.param_groups)
    assert any(p is model.temp for p in decayed)  # 0-d: decayed, as ALBEF's create_optimizer does
    assert any(p is model.model.text_encoder.cls.predictions.bias for p in exempt)
    assert all(p.ndim == 1 for p in exempt) and all(p.requires_grad for p in decayed + exempt)
    assert not any(p is q for p in decayed + exempt for q in objective.momentum_model.parameters())


def test_an_amc_run_resumes_exactly_with_its_momentum_model_and_queues(albef_folder, tmp_path):
    triplets = shapes_triplets(6, first_seed=0)
    config = TrainConfig(learning_rate=1e-3, warmup_steps=1, max_steps=4, batch_size=6, checkpoint_every=2,
                         keep_checkpoints=4, queue_size=10, num_workers=0, log_every=1)
    straight = AlbefGroundingModel.from_pretrained(albef_folder)
    train(config, straight, triplets, [], tmp_path / "straight")

    class Crash(RuntimeError):
        pass

    def crash_at_step_3(step, metrics):
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        train(config, AlbefGroundingModel.from_pretrained(albef_folder), triplets, [], tmp_path / "resumed",
              log_fn=crash_at_step_3)
    resumed = AlbefGroundingModel.from_pretrained(albef_folder)
    train(config, resumed, triplets, [], tmp_path / "resumed")
    for name, tensor in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    last = {run: torch.load(tmp_path / run / "checkpoints" / "step-0000004.pt", weights_only=True)["objective"]
            for run in ("straight", "resumed")}
    assert {"queues.image_queue", "queues.queue_ptr_txt", "momentum_model.model.temp"} <= set(last["straight"])
    for name, tensor in last["straight"].items():
        torch.testing.assert_close(last["resumed"][name], tensor, rtol=0, atol=0, msg=name)


def test_amc_box_masks_truncate_to_pixels_and_resize_nearest():
    from synground_assets.grounding.data import amc_box_mask

    mask = amc_box_mask([(1.7, 0.2, 3.9, 2.0)], image_size=(8, 4), resolution=4)
    # At the image's size: columns int(1.7)=1 .. int(3.9)=3 (exclusive), rows 0 .. 2; then every
    # second column (nearest: source floor(i * 8 / 4)) and every row.
    expected = torch.zeros(4, 8)
    expected[0:2, 1:3] = 1
    assert torch.equal(mask, expected[:, [0, 2, 4, 6]])
    upsampled = amc_box_mask([(0, 0, 2, 2)], image_size=(4, 4), resolution=4, mask_size=7)
    assert upsampled[0, 0] == 1 and upsampled[-1, -1] == 0 and upsampled[3, 0] == 0.5  # align_corners=True


def test_momentum_copies_and_queues_come_from_a_pretrain_layout_checkpoint(albef_folder, tmp_path):
    from synground_assets.models.albef import from_pretrained, load_official, save_pretrained
    from synground_assets.models.albef.convert import pretraining_state
    from synground_assets_tests.models.test_albef_checkpoints import pretrain_layout, save_official

    albef, tokenizer = from_pretrained(albef_folder)
    state = pretrain_layout(albef, amc=True)  # momentum copies = weights + 1, queues of 64
    path = save_official(tmp_path / "amc.pth", state)
    converted = load_official(path, albef.config)
    assert converted.config.mlm_head
    torch.testing.assert_close(converted.text_encoder.cls.predictions.transform.dense.weight,
                               state["text_encoder.cls.predictions.transform.dense.weight"])
    save_pretrained(tmp_path / "folder", converted, tokenizer, pretraining_state(state, albef.config))
    model = AlbefGroundingModel.from_pretrained(tmp_path / "folder")
    objective = AmcObjective(TrainConfig(queue_size=64), model, 10)
    momentum = objective.momentum_model.model
    torch.testing.assert_close(momentum.visual_encoder.pos_embed, state["visual_encoder_m.pos_embed"])
    # This file has no momentum MLM head: the momentum model keeps its copy of the online one.
    torch.testing.assert_close(momentum.text_encoder.cls.predictions.bias,
                               model.model.text_encoder.cls.predictions.bias)
    torch.testing.assert_close(momentum.text_encoder.encoder.layer[0].attention.self.query.weight,
                               state["text_encoder_m.bert.encoder.layer.0.attention.self.query.weight"])
    torch.testing.assert_close(objective.queues.image_queue, state["image_queue"])
    assert not torch.equal(momentum.vision_proj.weight, model.model.vision_proj.weight)
    with pytest.raises(ValueError, match="set training.queue_size to the checkpoint's queue length"):
        AmcObjective(TrainConfig(queue_size=32), AlbefGroundingModel.from_pretrained(tmp_path / "folder"), 10)


def test_itc_mode_gradcam_is_albefs_grounding_map(albef_folder):
    from synground_assets.grounding.gradcam import itc_gradcam
    from synground_assets.grounding.pointing_game import evaluate_pointing_game

    model = AlbefGroundingModel.from_pretrained(albef_folder).eval()
    triplets = shapes_triplets(2, first_seed=7, oracle_boxes=True)[:3]
    inputs = model.preprocess([t.load_image() for t in triplets], [t.phrase for t in triplets])
    block = model.itc_gradcam_block
    # As Grounding.py does it: backward of sim.diag().sum(), the gradient read by a hook.
    albef, saved = model.model, {}
    with albef.capture_vision_attention(block) as captured:
        image_embeds = albef.visual_encoder(inputs.pixel_values)
    captured[0].register_hook(lambda grad: saved.update(grad=grad))
    image_feat = F.normalize(albef.vision_proj(image_embeds[:, 0, :]), dim=-1)
    text_embeds = albef.text_encoder(inputs.input_ids, inputs.attention_mask, mode="text")
    text_feat = F.normalize(albef.text_proj(text_embeds[:, 0, :]), dim=-1)
    (image_feat @ text_feat.t() / albef.temp).diag().sum().backward()
    rows = model.patch_grid()[0]
    cam = captured[0][:, :, 0, 1:].reshape(len(triplets), -1, rows, rows)
    grad = saved["grad"][:, :, 0, 1:].reshape(len(triplets), -1, rows, rows).clamp(0)
    torch.testing.assert_close(itc_gradcam(model, inputs, block), (cam * grad).mean(1).detach())
    result = evaluate_pointing_game(model, triplets, gradcam_mode="itc", protocol="amc")
    assert len(result.results) == 3


def test_itc_mode_needs_an_adapter_that_has_it(tiny_blip_folder):
    from synground_assets.grounding.pointing_game import evaluate_pointing_game

    with pytest.raises(ValueError, match="has no ITC-mode GradCAM"):
        evaluate_pointing_game(BlipGroundingModel.from_pretrained(tiny_blip_folder),
                               shapes_triplets(1, 0, oracle_boxes=True), gradcam_mode="itc")
    with pytest.raises(ValueError, match="gradcam_mode must be one of itm, itc"):
        TrainConfig(gradcam_mode="attention")


def test_amc_refuses_a_model_without_pretraining_heads(tiny_blip_folder, tmp_path):
    with pytest.raises(ValueError, match="objective amc needs a model with ALBEF's pretraining heads"):
        train(TrainConfig(objective="amc", max_steps=1, batch_size=2),
              BlipGroundingModel.from_pretrained(tiny_blip_folder), shapes_triplets(2, first_seed=0), [], tmp_path)
