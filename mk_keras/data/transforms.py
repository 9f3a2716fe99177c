"""Per-image ImageNet transforms in TensorFlow ops, seeded statelessly (for `tf.data` parallel maps).

Training: fused JPEG decode + random-resized crop, horizontal flip, RandAugment as timm's
"rand-m9-mstd0.5-inc1" (the ConvNeXt recipe), random erasing as timm's (mode "pixel", one box).
Evaluation: resize the shorter side to size / crop_pct, centre crop. Images are float32 [H,W,3], raw pixels
rounded to integers in [0, 255] after every step (as PIL's uint8 images are). Every random draw comes from a
per-image seed (int64 [2]), so an image's augmentation depends only on that seed.
"""

import math

import tensorflow as tf

INTERPOLATIONS = ("bilinear", "bicubic")
# RandAugment's fill for geometric ops and random erasing's noise: ImageNet mean and std (timm's defaults).
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
_FILL = tuple(float(round(255 * m)) for m in _MEAN)


def _sub(seed, k):
    return tf.random.experimental.stateless_fold_in(seed, k)


def _uniform(seed, shape=(), low=0.0, high=1.0):
    return tf.random.stateless_uniform(list(shape), seed=seed, minval=low, maxval=high)


def _finish(x):
    return tf.clip_by_value(tf.round(x), 0.0, 255.0)


def _resize(image, size, method):
    return _finish(tf.image.resize(tf.cast(image, tf.float32), size, method=method, antialias=True))


# --- crops ---------------------------------------------------------------------------------------------------


def crop_window(shape, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Random-resized-crop window [y, x, h, w] (int32) of an image of `shape` [H, W, C]:
    `tf.image.stateless_sample_distorted_bounding_box` with area fraction in `scale` and width/height in `ratio`,
    10 attempts, the whole image when none fits."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.cast(shape, tf.int32), tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
        aspect_ratio_range=ratio, area_range=scale, max_attempts=10, use_image_if_no_bounding_boxes=True)
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def decode_random_crop(data, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Encoded image bytes -> uint8 RGB crop: JPEG through `decode_and_crop_jpeg` (only the window is decoded);
    other formats decoded whole, then cropped."""

    def jpeg():
        window = crop_window(tf.image.extract_jpeg_shape(data), seed, scale, ratio)
        return tf.image.decode_and_crop_jpeg(data, window, channels=3)

    def other():
        return random_crop(tf.io.decode_image(data, channels=3, expand_animations=False), seed, scale, ratio)

    return tf.cond(tf.io.is_jpeg(data), jpeg, other)


def random_crop(image, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """The crop `decode_random_crop` takes, from a decoded image."""
    y, x, h, w = tf.unstack(crop_window(tf.shape(image), seed, scale, ratio))
    return image[y:y + h, x:x + w]


def eval_resize_shape(height, width, size, crop_pct):
    """(H', W') the image is resized to before the centre crop: the shorter side to floor(side / crop_pct)
    (for a square `size`: floor(224 / 0.875) = 256), the other side in proportion (truncated, as torchvision's
    Resize), and neither below the crop."""
    th, tw = (math.floor(s / crop_pct) for s in size)
    scale = tf.maximum(th / tf.cast(height, tf.float64), tw / tf.cast(width, tf.float64))
    new_h = tf.maximum(th, tf.cast(tf.floor(tf.cast(height, tf.float64) * scale), tf.int32))
    new_w = tf.maximum(tw, tf.cast(tf.floor(tf.cast(width, tf.float64) * scale), tf.int32))
    return new_h, new_w


def centre_crop(image, size, crop_pct, method):
    """Resize (antialiased) to `eval_resize_shape`, then crop `size` at ((H' - h) // 2, (W' - w) // 2)."""
    shape = tf.shape(image)
    new_h, new_w = eval_resize_shape(shape[0], shape[1], size, crop_pct)
    resized = _resize(image, tf.stack([new_h, new_w]), method)
    top, left = (new_h - size[0]) // 2, (new_w - size[1]) // 2
    return resized[top:top + size[0], left:left + size[1]]


# --- RandAugment (timm rand-m9-mstd0.5-inc1) ---------------------------------------------------------------


def _grey(x):
    """PIL's RGB -> L: (299 R + 587 G + 114 B) / 1000."""
    return tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)


def _blend(degenerate, x, factor):
    return _finish(degenerate + factor * (x - degenerate))


def _affine(x, a, b):
    """PIL-style affine: output pixel (x, y) samples the input at (a0 x + a1 y + a2, b0 x + b1 y + b2), bilinear,
    outside filled with the ImageNet mean colour (as timm's fillcolor)."""
    fill = tf.constant(_FILL)
    t = tf.reshape(tf.stack([*a, *b, 0.0, 0.0]), [1, 8])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=(x - fill)[None], transforms=t, output_shape=tf.shape(x)[:2], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")
    return _finish(out[0] + fill)


def _rotate(x, m, sign):
    angle = sign * m / 10.0 * 30.0 * math.pi / 180.0
    h, w = tf.cast(tf.shape(x)[0], tf.float32), tf.cast(tf.shape(x)[1], tf.float32)
    cy, cx, c, s = (h - 1) / 2, (w - 1) / 2, tf.cos(angle), tf.sin(angle)
    return _affine(x, (c, s, cx - c * cx - s * cy), (-s, c, cy + s * cx - c * cy))


def _shear_x(x, m, sign):
    k = sign * m / 10.0 * 0.3
    return _affine(x, (1.0, k, 0.5 * k), (0.0, 1.0, 0.0))


def _shear_y(x, m, sign):
    k = sign * m / 10.0 * 0.3
    return _affine(x, (1.0, 0.0, 0.0), (k, 1.0, 0.5 * k))


def _translate_x(x, m, sign):
    return _affine(x, (1.0, 0.0, sign * m / 10.0 * 0.45 * tf.cast(tf.shape(x)[1], tf.float32)), (0.0, 1.0, 0.0))


def _translate_y(x, m, sign):
    return _affine(x, (1.0, 0.0, 0.0), (0.0, 1.0, sign * m / 10.0 * 0.45 * tf.cast(tf.shape(x)[0], tf.float32)))


def _auto_contrast(x, m, sign):
    lo = tf.reduce_min(x, axis=[0, 1])
    hi = tf.reduce_max(x, axis=[0, 1])
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    return tf.where(hi > lo, tf.clip_by_value(tf.floor((x - lo) * scale), 0.0, 255.0), x)


def _equalize(x, m, sign):
    """PIL ImageOps.equalize per channel."""
    channels = []
    for c in range(3):
        v = tf.cast(x[..., c], tf.int32)
        hist = tf.math.bincount(v, minlength=256, maxlength=256)
        last = tf.gather(hist, tf.reduce_max(tf.where(hist > 0)))
        step = (tf.reduce_sum(hist) - last) // 255
        lut = tf.minimum((step // 2 + tf.cumsum(hist, exclusive=True)) // tf.maximum(step, 1), 255)
        channels.append(tf.where(step > 0, tf.cast(tf.gather(lut, v), tf.float32), x[..., c]))
    return tf.stack(channels, axis=-1)


def _invert(x, m, sign):
    return 255.0 - x


def _posterize(x, m, sign):  # increasing: bits kept = 4 - int(0.4 m)
    shift = 2.0 ** tf.cast(4 + tf.cast(m / 10.0 * 4.0, tf.int32), tf.float32)
    return tf.floor(x / shift) * shift


def _solarize(x, m, sign):  # increasing: threshold 256 - int(25.6 m)
    threshold = 256.0 - tf.floor(m / 10.0 * 256.0)
    return tf.where(x >= threshold, 255.0 - x, x)


def _solarize_add(x, m, sign):
    return tf.where(x < 128.0, tf.minimum(x + tf.floor(m / 10.0 * 110.0), 255.0), x)


def _enhance_factor(m, sign):  # increasing: 1 +- 0.09 m
    return 1.0 + sign * m / 10.0 * 0.9


def _color(x, m, sign):
    return _blend(tf.round(_grey(x)), x, _enhance_factor(m, sign))


def _contrast(x, m, sign):
    mean = tf.floor(tf.reduce_mean(tf.round(_grey(x))) + 0.5)
    return _blend(mean, x, _enhance_factor(m, sign))


def _brightness(x, m, sign):
    return _blend(0.0, x, _enhance_factor(m, sign))


def _sharpness(x, m, sign):
    """PIL ImageEnhance.Sharpness: blend with the SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13), border kept."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.round(tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], "VALID")[0])
    degenerate = tf.pad(smooth - x[1:-1, 1:-1], [[1, 1], [1, 1], [0, 0]]) + x
    return _blend(degenerate, x, _enhance_factor(m, sign))


# timm's _RAND_INCREASING_TRANSFORMS, in its order.
RANDAUGMENT_OPS = (
    ("AutoContrast", _auto_contrast), ("Equalize", _equalize), ("Invert", _invert), ("Rotate", _rotate),
    ("PosterizeIncreasing", _posterize), ("SolarizeIncreasing", _solarize), ("SolarizeAdd", _solarize_add),
    ("ColorIncreasing", _color), ("ContrastIncreasing", _contrast), ("BrightnessIncreasing", _brightness),
    ("SharpnessIncreasing", _sharpness), ("ShearX", _shear_x), ("ShearY", _shear_y),
    ("TranslateXRel", _translate_x), ("TranslateYRel", _translate_y),
)


@tf.function(reduce_retracing=True)
def _rand_augment_op(x, seed, magnitude, magnitude_std, prob):
    """One RandAugment step (a function: traced once per image shape, called `num_ops` times)."""
    u = _uniform(seed, [2])
    op = tf.random.stateless_uniform([], seed=_sub(seed, 1), maxval=len(RANDAUGMENT_OPS), dtype=tf.int32)
    m = tf.clip_by_value(magnitude + magnitude_std * tf.random.stateless_normal([], seed=_sub(seed, 2)), 0.0, 10.0)
    sign = tf.where(u[1] < 0.5, -1.0, 1.0)
    branches = [lambda f=f: tf.ensure_shape(f(x, m, sign), x.shape) for _, f in RANDAUGMENT_OPS]
    return tf.cond(u[0] < prob, lambda: tf.switch_case(op, branches), lambda: x)


def rand_augment(x, seed, num_ops=2, magnitude=9.0, magnitude_std=0.5, prob=0.5):
    """timm RandAugment on one image: `num_ops` ops drawn with replacement from `RANDAUGMENT_OPS`, each applied
    with probability `prob` at magnitude N(magnitude, magnitude_std) clipped to [0, 10] with a random sign."""
    for i in range(num_ops):
        x = _rand_augment_op(x, _sub(seed, i), float(magnitude), float(magnitude_std), float(prob))
    return x


# --- random erasing (timm, mode "pixel", one box) ----------------------------------------------------------


def random_erase(x, seed, prob=0.25, area=(0.02, 1 / 3), log_ratio=(math.log(0.3), math.log(1 / 0.3))):
    """With probability `prob`, fill one box with per-pixel normal noise of ImageNet's mean and std (timm
    mode "pixel", drawn in the normalised space, here mapped to raw pixels and clipped to [0, 255]). Box area a
    fraction in `area` of the image, log aspect ratio in `log_ratio`; 10 attempts to fit, as timm."""
    shape = tf.shape(x)
    h_img, w_img = shape[0], shape[1]
    u = _uniform(_sub(seed, 0), [2, 10])
    target = (area[0] + (area[1] - area[0]) * u[0]) * tf.cast(h_img * w_img, tf.float32)
    aspect = tf.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
    hs = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
    ws = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
    fits = (hs < h_img) & (ws < w_img)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    h, w = hs[first], ws[first]
    pos = _uniform(_sub(seed, 1), [2])
    top = tf.minimum(tf.cast(pos[0] * tf.cast(h_img - h + 1, tf.float32), tf.int32), h_img - h)
    left = tf.minimum(tf.cast(pos[1] * tf.cast(w_img - w + 1, tf.float32), tf.int32), w_img - w)

    def erase():
        noise = tf.random.stateless_normal(shape, seed=_sub(seed, 2)) * (255.0 * tf.constant(_STD))
        noise = tf.clip_by_value(noise + 255.0 * tf.constant(_MEAN), 0.0, 255.0)
        rows = tf.range(h_img)[:, None, None]
        cols = tf.range(w_img)[None, :, None]
        box = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
        return tf.where(box, noise, x)

    apply = (_uniform(_sub(seed, 3)) < prob) & tf.reduce_any(fits)
    return tf.cond(apply, erase, lambda: x)


# --- whole transforms ----------------------------------------------------------------------------------------


def train_transform(image_or_bytes, seed, size, encoded, randaugment=True, erase_prob=0.25,
                    scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation="bicubic"):
    """Random-resized crop to `size` (fused with the JPEG decode when `encoded`), horizontal flip, RandAugment,
    random erasing; float32 [h, w, 3]."""
    crop_seed = _sub(seed, 0)
    if encoded:
        crop = decode_random_crop(image_or_bytes, crop_seed, scale, ratio)
    else:
        crop = random_crop(image_or_bytes, crop_seed, scale, ratio)
    x = tf.ensure_shape(_resize(crop, size, interpolation), (*size, 3))
    x = tf.image.stateless_random_flip_left_right(x, _sub(seed, 1))
    if randaugment:
        x = rand_augment(x, _sub(seed, 2))
    if erase_prob > 0:
        x = random_erase(x, _sub(seed, 3), erase_prob)
    return x


def eval_transform(image_or_bytes, size, encoded, crop_pct=0.875, interpolation="bicubic"):
    """Decode (when `encoded`), resize the shorter side to size / crop_pct and centre crop: float32 [h, w, 3]."""
    image = tf.io.decode_image(image_or_bytes, channels=3, expand_animations=False) if encoded else image_or_bytes
    return tf.ensure_shape(centre_crop(image, size, crop_pct, interpolation), (*size, 3))
