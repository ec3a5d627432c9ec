"""Drawing of one chunk of portraits of the mini world (:func:`_render_chunk`): content vectors and a
:class:`~facestyle.world.looks.Look` -> images in [-1, 1], treatment included.

Every shape is a signed distance field evaluated on a pixel grid for the whole chunk at once; coverage is
``clamp(0.5 - sdf / edge, 0, 1)`` with ``edge`` the pixel width (or the look's wider softness). Layers are
composited back to front: background, hair back, shoulders and neck, ears, face, earrings, eyes, brows, nose,
mouth, beard, hair front, glasses. Small features are drawn only inside pixel windows (:func:`_window`) that
cover them for every image of the chunk.
"""
from __future__ import annotations

import math

import torch

from .content import FACTORS
from .looks import Look, _pick, _t
from .postprocess import _post
from .primitives import _box, _circle, _ell, _ellipse, _noise, _segment

_ZOOM = 1.45  # the image spans [-1/_ZOOM, 1/_ZOOM] world units


def _sel(mask, right, left):
    """Per-pixel choice between the right-side and left-side value of a per-image parameter."""
    return torch.where(mask, right, left)


def _window(size, cx, cy, ct, st, points, radius):
    """Pixel window (y0, y1, x0, x1) covering circles of ``radius`` (world units) around head-frame ``points``
    for every image of the chunk."""
    xs, ys = [], []
    for pu, pv in points:
        xs.append(cx + ct * pu - st * pv)
        ys.append(cy + st * pu + ct * pv)
    xs, ys = torch.cat([x.flatten() for x in xs]), torch.cat([y.flatten() for y in ys])
    r = float(torch.as_tensor(radius).max())
    to_px = lambda t: (t * _ZOOM + 1) / 2 * size  # noqa: E731
    rp = r * _ZOOM / 2 * size
    x0 = int(math.floor(float(to_px(xs.min())) - rp)) - 2
    x1 = int(math.ceil(float(to_px(xs.max())) + rp)) + 2
    y0 = int(math.floor(float(to_px(ys.min())) - rp)) - 2
    y1 = int(math.ceil(float(to_px(ys.max())) + rp)) + 2
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(size, max(x1, x0 + 1)), min(size, max(y1, y0 + 1))
    return y0, y1, x0, x1


def _render_chunk(c: torch.Tensor, look: Look, size: int, seed: int, idx: torch.Tensor,
                  texture: bool = True) -> torch.Tensor:
    n = c.shape[0]
    P = {f.name: c[:, i].view(n, 1, 1) for i, f in enumerate(FACTORS)}
    pw = 2.0 / size / _ZOOM  # pixel width in world units
    edge = max(pw, look.soft)

    def cov(d, w=edge):
        return (0.5 - d / w).clamp(0, 1)

    def fill(img, alpha, color):
        return img + (color - img) * alpha.unsqueeze(1)

    ol = look.outline
    ol_rgb = _t(look.outline_rgb)
    ol_edge = max(pw, 0.6 * pw)

    def outline(img, d, width=None, alpha=1.0):
        if ol <= 0:
            return img
        w = ol if width is None else width
        return fill(img, cov(d.abs() - 0.5 * w, ol_edge) * alpha, ol_rgb)

    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    Xi = lin.view(1, 1, size)  # image coordinates in [-1, 1] (textures, gradients)
    Yi = lin.view(1, size, 1)
    X, Y = Xi / _ZOOM, Yi / _ZOOM  # world coordinates (geometry)

    # ---- per-image parameters ([N,1,1])
    cx, cy = 0.0, -0.075
    tilt = (P["tilt"] - 0.5) * 0.6
    ct, st = torch.cos(tilt), torch.sin(tilt)
    u = ct * (X - cx) + st * (Y - cy)
    v = -st * (X - cx) + ct * (Y - cy)

    phi = (P["yaw"] - 0.5) * 1.0
    sphi, cphi = torch.sin(phi), torch.cos(phi)
    a = (0.255 + 0.085 * P["face_width"]) * look.head_a
    b = 0.35 * look.head_b
    fu = 0.10 * a * sphi  # silhouette shift
    jaw = look.jaw_lo + (look.jaw_hi - look.jaw_lo) * P["jaw"]

    lx = (P["light"] - 0.5) * 2.0
    Lx, Ly, Lz = lx * 0.85, torch.full_like(lx, -0.45), torch.full_like(lx, 0.75)
    Ln = torch.sqrt(Lx * Lx + Ly * Ly + Lz * Lz)
    Lx, Ly, Lz = Lx / Ln, Ly / Ln, Lz / Ln

    skin = _t(look.skin[0]) * (1 - P["skin_tone"].unsqueeze(1)) + _t(look.skin[1]) * P["skin_tone"].unsqueeze(1)
    hair_rgb = _pick(look.hair, P["hair_color"].flatten())
    eye_rgb = _pick(look.eyes, P["eye_color"].flatten())
    bg_rgb = _pick(look.bg, P["background"].flatten())
    hstyle = P["hair_style"].round()
    hlen = P["hair_length"]

    def shade_of(nx, ny):
        nz = torch.sqrt((1 - nx * nx - ny * ny).clamp(min=0.02))
        dot = (nx * Lx + ny * Ly + nz * Lz).clamp(min=0)
        if look.shading == "smooth":
            s = look.shade_lo + (1.08 - look.shade_lo) * dot
        elif look.shading == "cel":
            s = look.shade_lo + (1 - look.shade_lo) * ((dot - 0.42) / 0.04).clamp(0, 1)
        else:  # flat
            s = look.shade_lo + (1 - look.shade_lo) * ((dot - 0.42) / 0.10).clamp(0, 1)
        return s, dot

    # ---- face shape (superellipse lower half, tapering jaw)
    fx = u - fu
    lower = v > 0
    vn = (v / b).clamp(min=0)
    taper = 1 - ((1 - jaw) * 0.32 + look.chin) * vn * vn
    a_eff = a * taper.clamp(min=0.25)
    xn, yn = fx / a_eff, v / b
    nexp = 2 + 1.6 * jaw
    kf_lo = (xn.abs() ** nexp + vn ** nexp) ** (1 / nexp)
    kf = torch.where(lower, kf_lo, torch.sqrt(xn * xn + yn * yn))
    rf = torch.sqrt(fx * fx + v * v + 1e-12)
    d_face = rf * (1 - 1 / (kf + 1e-6))
    face_shade, face_dot = shade_of(xn.clamp(-1, 1), yn.clamp(-1, 1))

    # ---- eyes on a cylinder: x = R sin(theta + yaw); the far side narrows
    es = (0.72 + 0.56 * P["eye_size"]) * look.eye_scale
    theta_e = 0.42 + 0.26 * P["eye_spacing"]
    ev = -0.035 + look.eye_dy
    ex0 = 0.054 * es
    ey = ex0 * look.eye_aspect
    side = {}
    for s in (-1.0, 1.0):
        ang = s * theta_e + phi
        eu = fu + a * 0.95 * look.eye_spread * torch.sin(ang)
        fore = (torch.cos(ang) / torch.cos(theta_e)).clamp(0.25, 1.3)
        side[s] = (eu, ex0 * fore, fore)
    eye_mid = 0.5 * (side[-1.0][0] + side[1.0][0])

    # ---- nose and mouth anchors
    nose_len = (0.055 + 0.06 * P["nose_size"]) * look.nose_scale
    nose_w = (0.020 + 0.018 * P["nose_size"]) * look.nose_scale
    nu = fu + a * 1.02 * sphi
    nv = ev + 0.025 + nose_len
    mu = fu + a * 0.97 * sphi
    mv = ev + 0.19 * look.head_b + 0.025 * P["nose_size"] + look.mouth_dy
    mw = (0.048 + 0.064 * P["mouth_width"]) * look.mouth_scale * cphi
    smile = P["smile"]
    kcurve = (smile - 0.32) * 0.10 * look.mouth_scale
    opening = (smile - 0.62).clamp(min=0) * 0.13 * look.mouth_scale

    # ---- hair: front cap with a per-style hairline; back shape (long / bun / bald tufts) as one SDF
    is_short, is_long, is_bun, is_bald = [(hstyle == k).float() for k in range(4)]
    hu = fu * 0.4
    cap_a = a * (1.07 + 0.07 * hlen * is_short + 0.03 * is_long - 0.03 * is_bun)
    cap_b = b * (1.04 + 0.09 * hlen * is_short + 0.04 * is_long - 0.02 * is_bun)
    cap_v = -0.035 * look.head_b
    hl0 = (-b * (0.58 - 0.22 * hlen) * is_short - b * 0.40 * is_long - b * 0.66 * is_bun - 9.0 * is_bald)
    side_drop = b * (0.55 * is_short + 1.45 * is_long + 0.50 * is_bun)
    side_start = 0.62 * is_short + 0.64 * is_long + 0.70 * is_bun + 1.0 * is_bald
    part = 0.10 * b * (is_short + is_long)
    rel = (u - hu) / a
    # on the far side of a turned head the side hair retreats behind the face (never over the far eye)
    far = (torch.sign(u - fu) * sphi).clamp(min=0)
    start = side_start + 0.7 * far
    hairline = hl0 + part * rel + side_drop * ((rel.abs() - start) / (1.0 - side_start + 1e-3)).clamp(0, 1)
    cu, cv = (u - hu) / cap_a, (v - cap_v) / cap_b
    kc = torch.sqrt(cu * cu + cv * cv + 1e-12)
    d_cap = torch.sqrt((u - hu) ** 2 + (v - cap_v) ** 2 + 1e-12) * (1 - 1 / kc)
    d_front = torch.maximum(d_cap, v - hairline)
    hair_shade, hair_dot = shade_of(cu.clamp(-1, 1), cv.clamp(-1, 1))

    long_len = b * (0.35 + 1.5 * hlen)
    back_u = hu - 0.6 * fu
    bun_r = 0.06 + 0.06 * hlen
    tuft_a, tuft_b = 0.035 + 0.03 * hlen, 0.06 + 0.035 * hlen
    # ellipse part: long -> back of the head; bun -> bun; bald -> a tuft mirrored on both sides
    e_u = is_long * back_u + is_bun * hu + is_bald * (a * 0.97)
    e_v = is_long * cap_v + is_bun * (cap_v - cap_b - bun_r * 0.45) - is_bald * 0.05
    e_a = is_long * a * 1.24 + is_bun * bun_r + is_bald * tuft_a + is_short * 1e-3
    e_b = is_long * b * 1.12 + is_bun * bun_r + is_bald * tuft_b + is_short * 1e-3
    uu = torch.where(is_bald > 0, (u - fu).abs(), u)
    d_back = _ellipse(uu - e_u, v - e_v, e_a, e_b) + is_short * 9.0
    box = _box(u - back_u, v - 0.5 * long_len, a * (1.22 + 0.1 * hlen), 0.5 * long_len, 0.07)
    d_back = torch.minimum(d_back, box + (1 - is_long) * 9.0)

    # ---- ears (one pass: each pixel uses the ear on its side)
    right = u > fu
    s_pix = right.float() * 2 - 1
    ear_u = fu + s_pix * a * 0.96 - 0.30 * a * sphi
    vis = (1 - 0.7 * s_pix * sphi).clamp(0.3, 1.6)
    ear_v = ev + 0.045
    if look.ear_point:
        du, dv = u - (ear_u + s_pix * 0.045), v - (ear_v - 0.045)
        ca, sa = math.cos(0.55), math.sin(0.55) * s_pix
        ru, rv = ca * du - sa * dv, sa * du + ca * dv
        d_ear = _ellipse(ru, rv, 0.034 * vis * look.ear_scale, 0.12 * look.ear_scale)
        lobe_v = ear_v + 0.03
    else:
        d_ear = _ellipse(u - ear_u, v - ear_v, 0.038 * vis * look.ear_scale, 0.068 * look.ear_scale)
        lobe_v = ear_v + 0.068 * look.ear_scale

    # ================================================================ paint (full frame)
    img = bg_rgb * torch.ones(1, 1, size, size)
    grad = 1.0 + 0.16 * lx * Xi - 0.06 * Yi  # brighter on the lit side
    if look.post == "real":
        img = img * (grad * (1.0 - 0.16 * (Xi * Xi + Yi * Yi))).unsqueeze(1)
    elif look.post == "fantasy":
        glow = torch.exp(-torch.clamp(torch.minimum(d_face, d_cap), min=0) / 0.16)
        img = img * grad.unsqueeze(1) + _t((0.35, 0.75, 0.85)) * (0.45 * glow).unsqueeze(1)
    else:
        img = img * grad.unsqueeze(1)

    hair_col = hair_rgb * hair_shade.unsqueeze(1)
    img = fill(img, cov(d_back), hair_col * 0.82)
    img = outline(img, d_back)

    d_sh = _ellipse(X, Y - 0.76, 0.62, 0.30)
    cloth = _t(look.cloth) * (0.9 + 0.15 * lx * X).unsqueeze(1)
    d_neck = _box(u - fu * 0.3, v - (b * 0.9 + 0.2), a * 0.44, 0.3, 0.02)
    if look.shading == "smooth":
        neck_col = skin * (0.62 + 0.38 * ((v - b * 0.75) / 0.3).clamp(0, 1)).unsqueeze(1)
    else:
        neck_col = skin * look.shade_lo
    img = fill(img, cov(d_neck), neck_col)
    img = outline(img, d_neck)
    img = fill(img, cov(d_sh), cloth)
    img = outline(img, d_sh)

    if look.shading == "smooth":
        ear_col = skin * (0.78 + 0.25 * (s_pix * lx).clamp(min=0)).unsqueeze(1)
    else:
        ear_col = skin * (look.shade_lo + (1 - look.shade_lo) * (s_pix * lx > 0.2).float()).unsqueeze(1)
    img = fill(img, cov(d_ear), ear_col)
    img = outline(img, d_ear)

    img = fill(img, cov(d_face), skin * face_shade.unsqueeze(1))
    img = outline(img, d_face)
    face_cov = cov(d_face)

    # earrings: gold rings under the lobes, hidden behind the face on the far side
    rr = 0.028
    d_ring = _circle(u - (ear_u + s_pix * 0.014), v - (lobe_v + rr * 0.9), rr).abs() - 0.009 * (1 + 0.3 * (ol > 0))
    hide = face_cov * (s_pix * sphi * 6).clamp(0, 1)
    img = fill(img, cov(d_ring, pw) * P["earrings"] * (1 - hide), _t(look.gold))

    # ================================================================ eyes window: eyes, brows, glasses, blush
    gx_pad, gy_pad = 0.024, 0.026
    r_eye = float((ex0 * 1.3 + gx_pad + 0.02).max()) + float((ey + gy_pad).max()) * 0 + 0.09
    y0, y1, x0, x1 = _window(size, cx, cy, ct, st,
                             [(side[-1.0][0], ev - 0.03), (side[1.0][0], ev - 0.03)], r_eye)
    wu, wv = u[:, y0:y1, x0:x1], v[:, y0:y1, x0:x1]
    w = img[:, :, y0:y1, x0:x1]
    rgt = wu > eye_mid
    eu = _sel(rgt, side[1.0][0], side[-1.0][0])
    exs = _sel(rgt, side[1.0][1], side[-1.0][1])
    fore = _sel(rgt, side[1.0][2], side[-1.0][2])
    if look.blush > 0:
        d_bl = _ell(wu - eu, wv - (ev + ey + 0.07), 0.06 * fore, 0.025)
        w = fill(w, cov(d_bl, 0.04) * look.blush, _t((1.0, 0.55, 0.6)))
    du, dv = wu - eu, wv - ev
    d_scl = _ell(du, dv, exs, ey)
    w = fill(w, cov(d_scl), _t(look.sclera))
    iu = du - 0.25 * sphi * exs
    rix, riy = exs * look.iris_x, ey * look.iris_y
    d_iris = torch.maximum(_ell(iu, dv, rix, riy), d_scl)
    c_iris = cov(d_iris)
    w = fill(w, c_iris, eye_rgb)
    if look.post == "anime":  # darker top of the iris
        w = fill(w, c_iris * 0.55 * (-dv / riy).clamp(0, 1), eye_rgb * 0.35)
    d_pupil = torch.maximum(_ell(iu, dv, rix * 0.45, riy * 0.45), d_scl)
    w = fill(w, cov(d_pupil), _t((0.03, 0.03, 0.04)))
    if look.highlight > 0:
        d_hl = _circle(iu + 0.35 * rix, dv + 0.35 * riy, look.highlight * riy)
        w = fill(w, cov(d_hl, max(pw, 0.5 * edge)), _t((1.0, 1.0, 1.0)))
    if look.lash > 0:
        lid = cov(d_scl.abs() - 0.5 * look.lash, max(pw, 0.5 * edge)) * (dv < -0.15 * ey).float()
        w = fill(w, lid, _t((0.07, 0.05, 0.05)))
    w = outline(w, d_scl, width=ol * 0.8)
    # brows
    brow_r = (0.006 + 0.014 * P["brow_thickness"]) * look.brow_scale
    bw = exs * 1.05
    by = -ey * 1.2 - 0.032
    d_brow = _segment(du, dv + 0.005 * (du / bw) ** 2, -bw, by, bw, by, brow_r)
    w = fill(w, cov(d_brow, max(pw, 0.6 * edge)), hair_rgb * 0.65 + 0.02)
    # glasses
    gl = P["glasses"].round()
    has_gl = (gl > 0).float()
    fw = look.frame_w
    gx = exs + gx_pad * fore
    gy = ey + gy_pad
    d_r = _ell(du, dv, gx, torch.maximum(gy, 0.85 * gx))
    d_s = _box(du, dv, gx, gy * 0.95, 0.014)
    d_g = torch.where(gl == 1, d_r, d_s)
    w = fill(w, cov(d_g) * (look.lens_alpha * has_gl), _t((0.85, 0.92, 1.0)))
    gxl = side[-1.0][1] + gx_pad * side[-1.0][2]
    gxr = side[1.0][1] + gx_pad * side[1.0][2]
    d_bridge = _segment(wu, wv, side[-1.0][0] + gxl, ev - 0.012, side[1.0][0] - gxr, ev - 0.012, 0.5 * fw)
    d_frame = torch.minimum(d_g.abs() - 0.5 * fw, d_bridge)
    w = fill(w, cov(d_frame, max(pw, 0.5 * edge)) * has_gl, _t(look.frame))
    img[:, :, y0:y1, x0:x1] = w

    # ================================================================ lower-face window: nose, mouth, beard
    r_low = float((a * 1.1).max())
    y0, y1, x0, x1 = _window(size, cx, cy, ct, st, [(fu, (ev + b) * 0.5 + 0.03)],
                             max(r_low, (b - ev) * 0.5 + 0.06))
    wu, wv = u[:, y0:y1, x0:x1], v[:, y0:y1, x0:x1]
    w = img[:, :, y0:y1, x0:x1]
    light_side = -torch.sign(lx + 1e-6)  # shadow side of the nose
    if look.nose_mode == "real":
        d_br = _segment(wu, wv, nu + light_side * nose_w * 0.8, ev + 0.01, nu + light_side * nose_w * 0.7,
                        nv - 0.01, nose_w * 0.35)
        w = fill(w, cov(d_br, 0.05) * 0.35, skin * 0.55)
        d_tip = _ell(wu - nu, wv - (nv - 0.2 * nose_w), nose_w * 1.05, nose_w * 0.75)
        w = fill(w, cov(d_tip, 0.035) * 0.45, skin * 1.08 + 0.03)
        d_under = _ell(wu - nu, wv - (nv + 0.35 * nose_w), nose_w * 1.1, nose_w * 0.35)
        w = fill(w, cov(d_under, 0.03) * 0.5, skin * 0.55)
        d_n = _ell((wu - nu).abs() - nose_w * 0.55 * cphi, wv - (nv + 0.1 * nose_w), nose_w * 0.28, nose_w * 0.17)
        w = fill(w, cov(d_n, max(pw, 0.012)) * 0.85, skin * 0.35)
    elif look.nose_mode == "arc":
        d_arc = _circle(wu - nu, wv - (nv - 0.5 * nose_w), nose_w).abs() - 0.5 * ol * 0.8
        w = fill(w, cov(d_arc, pw) * (wv > nv - 0.45 * nose_w).float(), ol_rgb)
    elif look.nose_mode == "dot":
        d_dot = _segment(wu, wv, nu, nv - 0.9 * nose_w, nu + 0.3 * nose_w, nv, 0.004 + 0.2 * nose_w)
        w = fill(w, cov(d_dot, pw) * 0.8, skin * 0.62)
    else:  # line: bridge line on the shadow side plus a small tip arc
        lw = 0.006 if ol <= 0 else 0.5 * ol
        line_rgb = skin * 0.5 if ol <= 0 else ol_rgb
        d_l = _segment(wu, wv, nu + light_side * nose_w * 0.6, ev + 0.02, nu + light_side * nose_w * 0.9,
                       nv - 0.3 * nose_w, lw)
        w = fill(w, cov(d_l, pw) * 0.7, line_rgb)
        d_arc = _circle(wu - nu, wv - (nv - 0.6 * nose_w), nose_w * 0.9).abs() - lw
        w = fill(w, cov(d_arc, pw) * (wv > nv - 0.3 * nose_w).float() * 0.8, line_rgb)

    # mouth: a curved band (smile bends the corners up), opened with teeth for broad smiles
    mxn = (wu - mu) / mw
    inside = (1 - mxn * mxn).clamp(min=0)
    sq = torch.sqrt(inside)
    ym = mv + kcurve * (0.5 - mxn * mxn) + 0.5 * opening * inside
    dy = (wv - ym).abs()
    dx = (wu - mu).abs()
    d_mouth = torch.maximum(dy - (look.lip_t + 0.5 * opening) * sq - 0.002, dx - mw)
    d_inner = torch.maximum(dy - 0.5 * opening * sq, dx - 0.9 * mw)
    m_edge = max(pw, 0.5 * edge)
    lips = skin * _t((0.62, 0.40, 0.40)) + _t(look.lips) * 0.35
    w = fill(w, cov(d_mouth, m_edge), lips)
    w = fill(w, cov(d_inner, m_edge), _t((0.30, 0.08, 0.10)))
    d_teeth = torch.maximum(d_inner, wv - (ym - 0.1 * opening * sq))
    w = fill(w, cov(d_teeth, pw) * (opening > 0.004).float(), _t((0.96, 0.94, 0.90)))
    w = outline(w, d_mouth, width=ol * 0.7)

    # beard: cheeks below the nose, moustache and chin, the mouth left free
    beard = P["beard"]
    wd_face = d_face[:, y0:y1, x0:x1]
    rel_f = (wu - fu) / a
    d_beard = torch.maximum(wd_face - 0.018, nv - 0.005 - 0.16 * b * rel_f * rel_f - wv)
    d_beard = torch.maximum(d_beard, 0.006 - d_mouth)
    beard_col = hair_rgb * (0.42 * hair_shade[:, y0:y1, x0:x1] + 0.5 * face_shade[:, y0:y1, x0:x1]).unsqueeze(1)
    if look.post in ("real", "impasto", "fantasy"):
        # texture=False: one fixed stubble pattern, so the image depends on the content only
        stub = (_noise(seed, idx, size, 40, 40, 11) if texture else
                _noise(0, torch.zeros_like(idx), size, 40, 40, 11))[:, 0, y0:y1, x0:x1]
        beard_alpha = cov(d_beard, max(edge, 0.03)) * (0.80 + 0.2 * stub)
    else:
        beard_alpha = cov(d_beard)
    w = fill(w, beard_alpha * beard, beard_col)
    w = outline(w, d_beard, alpha=beard)
    img[:, :, y0:y1, x0:x1] = w

    # ================================================================ hair front
    if look.post == "real":  # soft shadow of the fringe on the forehead
        d_shadow = torch.maximum(d_cap, v - 0.03 - hairline)
        img = fill(img, cov(d_shadow, 0.06) * 0.35 * face_cov, skin * 0.45)
    front_col = hair_col
    if look.post == "anime":  # glossy band
        band = ((0.06 - (kc - 0.78).abs()) / 0.02).clamp(0, 1) * (cv < -0.3).float()
        front_col = hair_col + (1 - hair_col) * (0.45 * band).unsqueeze(1)
    img = fill(img, cov(d_front), front_col)
    img = outline(img, d_front)
    if ol > 0:
        img = outline(img, d_back, alpha=is_bun)  # the bun stays outlined over the cap

    # ================================================================ treatments
    img = _post(img, look, P, seed, idx, size, Xi, Yi, lx, face_dot, hair_dot, d_face, d_front, d_back, texture)
    return img.clamp(0, 1) * 2 - 1
