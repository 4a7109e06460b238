import pytest
import torch

from course_adv.models import MLP, MODELS, PoolCNN, SmallCNN, build_model, count_parameters


def test_small_cnn_is_the_fast_adversarial_training_net():
    # Wong et al. 2020, MNIST: conv(1->16, 4, s2) conv(16->32, 4, s2) fc(1568->100) fc(100->10)
    assert count_parameters(SmallCNN()) == 166_406


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_map_images_to_logits(name):
    torch.manual_seed(0)
    model = build_model(name)
    out = model(torch.rand(5, 1, 28, 28))
    assert out.shape == (5, 10)
    # logits, not probabilities: rows do not sum to one
    assert not torch.allclose(out.sum(1), torch.ones(5))


def test_width_and_dropout_variants():
    assert count_parameters(SmallCNN(width=2)) > 3 * count_parameters(SmallCNN())
    assert count_parameters(MLP(width=0.5)) < count_parameters(MLP())
    model = PoolCNN(dropout=0.5)
    assert any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    x = torch.rand(4, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), model(x))  # dropout off in eval mode


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="model name 'vgg'"):
        build_model("vgg")
    with pytest.raises(ValueError, match="dropout"):
        SmallCNN(dropout=1.0)
    with pytest.raises(ValueError, match="width"):
        PoolCNN(width=0)
