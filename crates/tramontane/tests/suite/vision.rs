//! Images (issue 27) against transformers' reference
//! (scripts/fixtures/make_vision.py): the processor's pixel values from our
//! decoders and Pillow-exact resize, and the image token layout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tramontane::parse::safetensors;
use tramontane::vision::{decode::decode, layout, ImageTokens, VisionConfig};

use crate::common::fixtures;

fn dir(model: &str) -> PathBuf {
    fixtures().join("vision").join(model)
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The f32 tensors of a safetensors file, by name.
pub fn tensors(path: &Path) -> HashMap<String, (Vec<u64>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let size = bytes.len() as u64;
    let n = safetensors::header_len(&bytes[..8], "ref", size).unwrap();
    let start = (safetensors::PREFIX + n) as usize;
    let infos = safetensors::parse_header(&bytes[8..start], "ref", size).unwrap();
    infos
        .into_iter()
        .map(|t| {
            let at = t.offset as usize;
            let data = bytes[at..at + t.nbytes as usize].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            (t.name, (t.shape, data))
        })
        .collect()
}

pub fn vision_config(model: &str) -> VisionConfig {
    let d = dir(model);
    let cfg = json(&d.join("config.json"));
    let mut vc = VisionConfig::from_json(&cfg, "config.json", 1e-5).unwrap();
    vc.set_processor(Some(&json(&d.join("preprocessor_config.json"))), Some(&json(&d.join("processor_config.json"))), "processor").unwrap();
    vc
}

/// One way of loading a fixture's checkpoint: its Hugging Face folder, or
/// the GGUF and mmproj files llama.cpp's converter wrote from it
/// (`gguf/model.gguf`, `gguf/mmproj-{type}.gguf`, F32 text model).
#[derive(Clone, Copy)]
struct Load {
    model: &'static str,
    /// `None`: the HF folder; else the mmproj's weight type.
    mmproj: Option<&'static str>,
}

impl Load {
    const HF: [Load; 2] = [Load { model: "mistral3", mmproj: None }, Load { model: "pixtral", mmproj: None }];
    /// Both classes through both formats, all in float32.
    const EXACT: [Load; 4] = [
        Load::HF[0],
        Load::HF[1],
        Load { model: "mistral3", mmproj: Some("f32") },
        Load { model: "pixtral", mmproj: Some("f32") },
    ];

    fn name(&self) -> String {
        match self.mmproj {
            None => self.model.to_string(),
            Some(t) => format!("{} (GGUF + {t} mmproj)", self.model),
        }
    }

    fn load(&self, opts: tramontane::LoadOptions) -> tramontane::Result<tramontane::Model> {
        use tramontane::source::DirSource;
        use tramontane::Model;
        match self.mmproj {
            None => pollster::block_on(Model::load(crate::common::gpu(), &DirSource::new(dir(self.model)), &opts, &mut |_| {})),
            Some(t) => {
                let opts = tramontane::LoadOptions { mmproj: Some(format!("mmproj-{t}.gguf")), ..opts };
                pollster::block_on(Model::load_gguf(crate::common::gpu(), &DirSource::new(dir(self.model).join("gguf")), "model.gguf", &opts, &mut |_| {}))
            }
        }
    }
}

/// The images of a reference case, in order.
pub fn case_images(case: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for m in case["messages"].as_array().unwrap() {
        if let Some(parts) = m["content"].as_array() {
            for p in parts {
                if p["type"] == "image" {
                    out.push(p["file"].as_str().unwrap().to_string());
                }
            }
        }
    }
    out
}

pub fn image_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("vision/images").join(name)).unwrap()
}

/// The image tokens' ids a reference.json names.
fn image_tokens(reference: &Value) -> ImageTokens {
    let id = |k: &str| reference[k].as_u64().unwrap() as u32;
    ImageTokens { image: id("image_token_id"), row_break: id("image_break_token_id"), end: id("image_end_token_id") }
}

/// Pixel values equal to the processor's (Pillow's resize reproduced in its
/// fixed-point arithmetic, rescale and normalize in transformers' precision),
/// for every image of both models (different rounding: patch 4 times merge 2
/// or 1), alpha composited on white.
#[test]
fn pixels_match_the_processor() {
    for model in ["mistral3", "pixtral"] {
        let vc = vision_config(model);
        let reference = json(&dir(model).join("reference.json"));
        let refs = tensors(&dir(model).join("reference.safetensors"));
        for case in reference["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            for (k, file) in case_images(case).iter().enumerate() {
                let pic = decode(&image_bytes(file), 1 << 24, file).unwrap();
                let px = vc.processor.pixels(&pic);
                let (shape, want) = &refs[&format!("{name}.pixels.{k}")];
                assert_eq!(shape, &vec![3, px.height as u64, px.width as u64], "{model} {name} {file}: size");
                let size = &case["image_sizes"][k];
                assert_eq!((size[0].as_u64().unwrap() as usize, size[1].as_u64().unwrap() as usize), (px.height, px.width));
                let worst = px.data.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst == 0.0, "{model} {name} {file}: pixel values differ by up to {worst}");
            }
        }
    }
}

/// The processor's token layout: the ids transformers fed the model are the
/// template's single placeholders expanded by each image's grid.
#[test]
fn image_tokens_expand_as_the_processor() {
    for model in ["mistral3", "pixtral"] {
        let vc = vision_config(model);
        let reference = json(&dir(model).join("reference.json"));
        let tokens = image_tokens(&reference);
        assert_eq!(vc.image_token_id, tokens.image);
        for case in reference["cases"].as_array().unwrap() {
            let want: Vec<u32> = case["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            // Collapse each image's run back to one placeholder.
            let (mut collapsed, mut inside) = (Vec::new(), false);
            for &t in &want {
                if t == tokens.end {
                    inside = false;
                } else if t == tokens.image && !inside {
                    collapsed.push(t);
                    inside = true;
                } else if !inside {
                    collapsed.push(t);
                }
            }
            let grids: Vec<(usize, usize)> = case_images(case)
                .iter()
                .map(|f| {
                    let pic = decode(&image_bytes(f), 1 << 24, f).unwrap();
                    vc.grid(pic.width, pic.height)
                })
                .collect();
            let (ids, rows) = layout::expand(&collapsed, tokens, &grids).unwrap();
            assert_eq!(ids, want, "{model} {}", case["name"]);
            let n_img = want.iter().filter(|&&t| t == tokens.image).count();
            assert_eq!(rows.iter().map(Vec::len).sum::<usize>(), n_img);
        }
    }
}

/// The lossy formats decode to the picture the PNG holds, near enough
/// (different decoders may differ by a few levels); corrupt, truncated and
/// oversized files are INVALID_REQUEST before any pixel is decoded.
#[test]
fn decoders_read_and_refuse() {
    let png = decode(&image_bytes("wide.png"), 1 << 24, "png").unwrap();
    for f in ["wide.jpg", "wide.webp"] {
        let pic = decode(&image_bytes(f), 1 << 24, f).unwrap();
        assert_eq!((pic.width, pic.height, pic.channels), (png.width, png.height, 3), "{f}");
        let mean = pic.pixels.iter().zip(&png.pixels).map(|(a, b)| (*a as f64 - *b as f64).abs()).sum::<f64>() / png.pixels.len() as f64;
        assert!(mean < 20.0, "{f}: mean difference {mean} from the PNG");
    }
    let alpha = decode(&image_bytes("alpha.png"), 1 << 24, "alpha").unwrap();
    assert_eq!(alpha.channels, 4);
    let bytes = image_bytes("big.png");
    for (what, data) in [("truncated", &bytes[..bytes.len() / 2]), ("header only", &bytes[..40]), ("not an image", &b"hello, world"[..])] {
        let e = decode(data, 1 << 24, what).unwrap_err();
        assert_eq!(e.code(), "INVALID_REQUEST", "{what}: {e}");
        assert!(e.to_string().contains(what), "{e}");
    }
    let e = decode(&bytes, 1000, "huge").unwrap_err();
    assert!(e.to_string().contains("over the limit"), "{e}");
}

/// The text model of both classes (nested `text_config`; tensors named as
/// transformers 5 saves them, and as the published Pixtral checkpoint
/// names them) on a prompt without images: logits and greedy tokens.
#[test]
fn text_model_of_vision_checkpoints() {
    for load in Load::EXACT {
        let model = load.name();
        let mut m = load.load(Default::default()).expect("loads");
        assert!(m.config().vision.is_some());
        let reference = json(&dir(load.model).join("reference.json"));
        let case = reference["cases"].as_array().unwrap().iter().find(|c| c["name"] == "text_only").unwrap();
        let input = crate::common::ids(&case["input_ids"]);
        let logits = pollster::block_on(m.logits_all(&input)).expect("forward");
        let vocab = m.config().vocab;
        let last = &logits[(input.len() - 1) * vocab..];
        for pair in case["last_position"]["top20"].as_array().unwrap() {
            let (id, want) = (pair[0].as_u64().unwrap() as usize, pair[1].as_f64().unwrap() as f32);
            assert!((last[id] - want).abs() <= crate::common::LOGIT_TOL, "{model}: logit of {id} is {} want {want}", last[id]);
        }
        m.reset();
        let want = crate::common::ids(&case["greedy"]["new_ids"]);
        let g = pollster::block_on(m.generate(&input, &crate::common::greedy(want.len()), &mut |_, _, _| true)).expect("generate");
        assert_eq!(g.generated, want, "{model}: greedy continuation");
    }
}

/// |encoder output - transformers| and |projected features - transformers|,
/// max over elements relative to the reference's largest magnitude.
const ENCODER_TOL: f32 = 1e-4;

fn max_rel(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale
}

/// The encoder and projector on our kernels, image by image, against
/// transformers' (which batches the images of a case with a block-diagonal
/// mask): the last hidden state of every patch and the projected rows.
#[test]
fn encoder_and_projector_match_transformers() {
    // The F16, BF16 and Q8_0 mmprojs round the weights: their error is the
    // weights' own (relative: F16 ~5e-4, BF16 ~4e-3, Q8_0 ~4e-3 of a block's
    // largest) carried through three layers (seen: 2e-3, 1e-2, 2.3e-2). A
    // wrong layout or type is off by O(1).
    let quantized = [("f16", 3e-3f32), ("bf16", 2e-2), ("q8_0", 5e-2)];
    let mut loads: Vec<(Load, f32)> = Load::EXACT.iter().map(|&l| (l, ENCODER_TOL)).collect();
    for model in ["mistral3", "pixtral"] {
        for (t, tol) in quantized {
            loads.push((Load { model, mmproj: Some(t) }, tol));
        }
    }
    for (load, tol) in loads {
        let (label, model) = (load.name(), load.model);
        let m = load.load(Default::default()).expect("loads");
        let vc = m.config().vision.clone().unwrap();
        let text_hidden = m.config().hidden;
        let (encoder, features) = m.runtime.vision.as_ref().expect("an encoder");
        let g = m.runtime.gpu();
        let reference = json(&dir(model).join("reference.json"));
        let refs = tensors(&dir(model).join("reference.safetensors"));
        for case in reference["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let files = case_images(case);
            if files.is_empty() {
                continue;
            }
            let (mut hidden, mut at) = (Vec::new(), 0);
            for f in &files {
                let px = vc.processor.pixels(&decode(&image_bytes(f), 1 << 24, f).unwrap());
                let rows = encoder.encode(g, &px, text_hidden, features, at).expect("encodes");
                let n = (px.height / vc.patch) * (px.width / vc.patch);
                hidden.extend(pollster::block_on(encoder.read_hidden(g, n)).unwrap());
                at += rows;
            }
            let (_, want) = &refs[&format!("{name}.encoder")];
            assert_eq!(hidden.len(), want.len(), "{model} {name}: patches");
            let e = max_rel(&hidden, want);
            eprintln!("{label} {name}: encoder max rel error {e:.2e}");
            assert!(e <= tol, "{label} {name}: encoder output off by {e}");
            let got = pollster::block_on(g.read_f32(features, at * text_hidden)).unwrap();
            let (_, want) = &refs[&format!("{name}.features")];
            assert_eq!(got.len(), want.len(), "{label} {name}: image tokens");
            let e = max_rel(&got, want);
            eprintln!("{label} {name}: features max rel error {e:.2e}");
            assert!(e <= tol, "{label} {name}: projected features off by {e}");
        }
    }
}

/// The reference's prompt with each image's run of tokens collapsed back to
/// the one placeholder the chat template writes.
fn collapsed(case: &Value, tokens: ImageTokens) -> Vec<u32> {
    let (mut out, mut inside) = (Vec::new(), false);
    for t in crate::common::ids(&case["input_ids"]) {
        if t == tokens.end {
            inside = false;
        } else if t == tokens.image && !inside {
            out.push(t);
            inside = true;
        } else if !inside {
            out.push(t);
        }
    }
    out
}

fn pictures(case: &Value) -> Vec<tramontane::vision::Picture> {
    case_images(case).iter().map(|f| decode(&image_bytes(f), 1 << 24, f).unwrap()).collect()
}

/// Images in the prompt end to end: the processor's layout of the prompt,
/// the top-20 logits at its last position and 12 greedy tokens equal to
/// transformers', for one and two images per message, a second turn and
/// transparency; each case run twice, the second time reusing the cache.
/// In this device's kernel shapes, and in the GPU shapes (tiled matmuls, the
/// workgroup-memory attention) where this device is a CPU rasterizer.
#[test]
fn images_in_the_prompt_match_transformers() {
    check_images_in_the_prompt();
    crate::common::in_gpu_shapes(check_images_in_the_prompt);
}

fn check_images_in_the_prompt() {
    use tramontane::GenerateRequest;
    for load in Load::EXACT {
        let (model, label) = (load.model, load.name());
        let mut m = load.load(Default::default()).expect("loads");
        let reference = json(&dir(model).join("reference.json"));
        let tokens = image_tokens(&reference);
        for case in reference["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let (prompt, images) = m.prompt_images(&collapsed(case, tokens), &pictures(case)).expect("lays out");
            assert_eq!(prompt, crate::common::ids(&case["input_ids"]), "{label} {name}: the processor's prompt");
            let want = crate::common::ids(&case["greedy"]["new_ids"]);
            let req = GenerateRequest { images, top_logits: 20, ..crate::common::greedy(want.len()) };
            for run in ["fresh", "cached"] {
                if run == "fresh" {
                    m.reset();
                }
                let g = pollster::block_on(m.generate(&prompt, &req, &mut |_, _, _| true)).expect("generates");
                assert_eq!(g.generated, want, "{label} {name} ({run}): greedy tokens");
                if run == "fresh" {
                    for pair in case["last_position"]["top20"].as_array().unwrap() {
                        let (id, logit) = (pair[0].as_u64().unwrap() as u32, pair[1].as_f64().unwrap() as f32);
                        let got = g.top_logits.iter().find(|t| t.0 == id).map(|t| t.1);
                        assert!(got.is_some_and(|v| (v - logit).abs() <= crate::common::LOGIT_TOL), "{label} {name}: logit of {id} is {got:?}, want {logit}");
                    }
                } else {
                    assert_eq!(g.prefilled_tokens, 1, "{label} {name}: the same images reuse the cache");
                }
            }
        }
    }
}

/// A bad mmproj is a typed error naming the file, from its header, before any
/// weight is read; a good one loads in the same process afterwards.
#[test]
fn bad_mmproj_files_give_clear_errors() {
    use tramontane::source::DirSource;
    use tramontane::{LoadOptions, Model};
    let d = std::env::temp_dir().join(format!("tramontane-mmproj-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let src_dir = dir("mistral3").join("gguf");
    for f in ["model.gguf", "mmproj-f32.gguf"] {
        std::fs::copy(src_dir.join(f), d.join(f)).unwrap();
    }
    let good = std::fs::read(src_dir.join("mmproj-f32.gguf")).unwrap();
    let at = |b: &[u8], s: &str| b.windows(s.len()).position(|w| w == s.as_bytes()).expect("in the header") + s.len();
    let mut lies = good.clone();
    // The u32 after the key and its value type.
    let v = at(&lies, "clip.vision.projection_dim") + 4;
    lies[v..v + 4].copy_from_slice(&96u32.to_le_bytes());
    std::fs::write(d.join("lies.gguf"), lies).unwrap();
    let mut other = good.clone();
    let v = at(&other, "clip.projector_type") + 4 + 8;
    other[v..v + 7].copy_from_slice(b"qwen2vl");
    std::fs::write(d.join("other.gguf"), other).unwrap();
    std::fs::write(d.join("short.gguf"), &good[..good.len() - 1000]).unwrap();
    let src = DirSource::new(&d);
    let load = |mmproj: &str| {
        let opts = LoadOptions { mmproj: Some(mmproj.into()), ..Default::default() };
        let mut read = 0;
        let r = pollster::block_on(Model::load_gguf(crate::common::gpu(), &src, "model.gguf", &opts, &mut |p| read = read.max(p.done)));
        (r.err(), read)
    };
    for (mmproj, code, says) in [
        ("lies.gguf", "INVALID_REQUEST", "width 96"),
        ("other.gguf", "UNSUPPORTED", "qwen2vl"),
        ("short.gguf", "MODEL_FORMAT", "runs past the end"),
        ("model.gguf", "MODEL_FORMAT", "not an mmproj"),
        ("absent.gguf", "MODEL_FORMAT", "absent.gguf: file not found"),
    ] {
        let (e, read) = load(mmproj);
        let e = e.unwrap_or_else(|| panic!("{mmproj} loaded"));
        assert_eq!((e.code(), read), (code, 0), "{mmproj}: {e}");
        assert!(e.to_string().contains(says), "{mmproj}: {e}");
    }
    let e = Load::HF[0].load(LoadOptions { mmproj: Some("mmproj-f32.gguf".into()), ..Default::default() }).err().expect("refused");
    assert_eq!(e.code(), "INVALID_REQUEST", "{e}");
    let (e, _) = load("mmproj-f32.gguf");
    assert!(e.is_none(), "{e:?}");
    let _ = std::fs::remove_dir_all(&d);
}

/// The cache is reused after an image only for the same image: the same
/// prompt with the images swapped (same sizes' tokens) runs again from the
/// first image and answers as a fresh model does.
#[test]
fn another_image_is_not_served_from_the_cache() {
    use tramontane::source::DirSource;
    use tramontane::{GenerateRequest, LoadOptions, Model};
    let src = DirSource::new(dir("pixtral"));
    let mut m = pollster::block_on(Model::load(crate::common::gpu(), &src, &LoadOptions::default(), &mut |_| {})).expect("loads");
    let vc = m.config().vision.clone().unwrap();
    let square = decode(&image_bytes("square.png"), 1 << 24, "square").unwrap();
    // The same size, other pixels: the square's colours inverted.
    let inverted = tramontane::vision::Picture { pixels: square.pixels.iter().map(|v| 255 - v).collect(), ..square.clone() };
    assert_eq!(vc.grid(square.width, square.height), vc.grid(inverted.width, inverted.height));
    let ids = m.tokenizer().encode_with("<s>[INST][IMG]Describe.[/INST]", false, true).unwrap();
    let run = |m: &mut Model, pic: &tramontane::vision::Picture| {
        let (prompt, images) = m.prompt_images(&ids, std::slice::from_ref(pic)).unwrap();
        let req = GenerateRequest { images, ..crate::common::greedy(6) };
        pollster::block_on(m.generate(&prompt, &req, &mut |_, _, _| true)).unwrap()
    };
    let first = run(&mut m, &square);
    let other = run(&mut m, &inverted);
    assert!(other.prefilled_tokens > 3, "prefilled only {} tokens after a different image", other.prefilled_tokens);
    m.reset();
    let fresh = run(&mut m, &inverted);
    assert_eq!(other.generated, fresh.generated);
    assert_ne!(first.generated, fresh.generated, "the fixture's images should lead to different tokens");
}

/// The image encoder's buffers for the largest image are in the size plan
/// checked before any weight is read: a
/// GPU memory limit that leaves no room for them refuses the load
/// (OUT_OF_MEMORY) before a byte of weights is read.
#[test]
fn the_encoder_is_sized_before_the_weights() {
    use tramontane::source::DirSource;
    use tramontane::{LoadOptions, Model};
    let src = DirSource::new(dir("pixtral"));
    let m = pollster::block_on(Model::load(crate::common::gpu(), &src, &LoadOptions::default(), &mut |_| {})).expect("loads");
    let planned = m.planned_gpu_memory();
    let vc = m.config().vision.clone().unwrap();
    let encoder: u64 = tramontane::forward::vision::buffer_bytes(&vc, m.config().hidden).unwrap().iter().map(|b| b.1).sum();
    drop(m);
    // Room for everything but half the encoder's buffers.
    let opts = LoadOptions { max_gpu_bytes: Some(planned.total() - encoder / 2), ..Default::default() };
    let mut read = 0u64;
    let e = pollster::block_on(Model::load(crate::common::gpu(), &src, &opts, &mut |p| read = read.max(p.done))).err().expect("refused");
    assert_eq!(e.code(), "OUT_OF_MEMORY", "{e}");
    assert_eq!(read, 0, "nothing downloaded");
}

/// LLaVA's class default `vision_feature_layer` (-2, when config.json has
/// none): the features come from the second-to-last encoder layer, the last
/// one's weights stay in the file unread. Greedy tokens against transformers
/// with the Pixtral fixture so configured (make_vision.py's
/// feature_layer_-2.json).
#[test]
fn features_from_the_second_to_last_encoder_layer() {
    use tramontane::source::DirSource;
    use tramontane::{GenerateRequest, Model};
    let d = std::env::temp_dir().join(format!("tramontane-layer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    for e in std::fs::read_dir(dir("pixtral")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
        }
    }
    let mut cfg = json(&d.join("config.json"));
    assert_eq!(cfg.as_object_mut().unwrap().remove("vision_feature_layer"), Some(serde_json::json!(-1)));
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    let mut m = pollster::block_on(Model::load(crate::common::gpu(), &DirSource::new(&d), &Default::default(), &mut |_| {})).expect("loads");
    let full = Load::HF[1].load(Default::default()).unwrap().info.vision.unwrap().weight_bytes;
    assert!(m.info.vision.unwrap().weight_bytes < full, "the last layer is not uploaded");
    let want = json(&dir("pixtral").join("feature_layer_-2.json"));
    let reference = json(&dir("pixtral").join("reference.json"));
    let tokens = image_tokens(&reference);
    let mut checked = 0;
    for case in reference["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let Some(ids) = want["greedy"].get(name) else { continue };
        let want = crate::common::ids(ids);
        let (prompt, images) = m.prompt_images(&collapsed(case, tokens), &pictures(case)).expect("lays out");
        m.reset();
        let g = pollster::block_on(m.generate(&prompt, &GenerateRequest { images, ..crate::common::greedy(want.len()) }, &mut |_, _, _| true)).expect("generates");
        assert_eq!(g.generated, want, "{name}: transformers' tokens with vision_feature_layer -2");
        checked += 1;
    }
    assert_eq!(checked, 4);
    let _ = std::fs::remove_dir_all(&d);
}

/// An image token with no image is INVALID_REQUEST (transformers' processor
/// refuses it too), with and without other images; the model answers after.
#[test]
fn an_image_token_without_its_image_is_refused() {
    use tramontane::GenerateRequest;
    let mut m = Load::HF[1].load(Default::default()).expect("loads");
    let one = m.tokenizer().encode_with("<s>[INST][IMG]Describe.[/INST]", false, true).unwrap();
    let e = pollster::block_on(m.generate(&one, &crate::common::greedy(2), &mut |_, _, _| true)).err().expect("refused");
    assert!(e.code() == "INVALID_REQUEST" && e.to_string().contains("no image"), "{e}");
    let two = m.tokenizer().encode_with("<s>[INST][IMG][IMG]Describe.[/INST]", false, true).unwrap();
    let square = decode(&image_bytes("square.png"), 1 << 24, "square").unwrap();
    let e = m.prompt_images(&two, std::slice::from_ref(&square)).err().expect("two [IMG] for one image");
    assert_eq!(e.code(), "INVALID_REQUEST", "{e}");
    let (prompt, images) = m.prompt_images(&one, &[square]).unwrap();
    let g = pollster::block_on(m.generate(&prompt, &GenerateRequest { images, ..crate::common::greedy(2) }, &mut |_, _, _| true)).expect("answers");
    assert_eq!(g.generated.len(), 2);
}

/// A device that cannot bind the encoder's buffers for the processor's
/// largest image takes smaller ones (here `max_binding` plays that device):
/// `longest_edge` drops to what fits, an image within it gives transformers'
/// tokens as before, a larger one is resized to the new edge.
#[test]
fn a_device_with_small_bindings_takes_smaller_images() {
    use tramontane::{GenerateRequest, LoadOptions};
    // Pixtral's fixture: 64-pixel images of 4-pixel patches (256 patches); its
    // largest buffer, q/k/v, is 256 x 96 floats. 60,000 bytes hold 156 rows:
    // 12 x 12 patches, a 48-pixel edge.
    let opts = LoadOptions { max_binding: Some(60_000), ..Default::default() };
    let mut m = Load::HF[1].load(opts).expect("loads");
    let v = m.info.vision.expect("an image side");
    assert_eq!((v.longest_edge, v.processor_longest_edge, v.max_patches), (48, 64, 144));
    let reference = json(&dir("pixtral").join("reference.json"));
    let tokens = image_tokens(&reference);
    let case = reference["cases"].as_array().unwrap().iter().find(|c| c["name"] == "one_image").unwrap();
    let (prompt, images) = m.prompt_images(&collapsed(case, tokens), &pictures(case)).expect("lays out");
    let want = crate::common::ids(&case["greedy"]["new_ids"]);
    let g = pollster::block_on(m.generate(&prompt, &GenerateRequest { images, ..crate::common::greedy(want.len()) }, &mut |_, _, _| true)).expect("generates");
    assert_eq!(g.generated, want, "a 37x23 image is within the new edge: transformers' tokens");
    let big = decode(&image_bytes("big.png"), 1 << 24, "big").unwrap();
    assert_eq!(m.config().vision.as_ref().unwrap().grid(big.width, big.height).1, 12, "a wide image: 48 pixels, 12 patches across");
    m.reset();
    let ids = m.tokenizer().encode_with("<s>[INST][IMG]Describe.[/INST]", false, true).unwrap();
    let (prompt, images) = m.prompt_images(&ids, &[big]).expect("lays out");
    pollster::block_on(m.generate(&prompt, &GenerateRequest { images, ..crate::common::greedy(3) }, &mut |_, _, _| true)).expect("encodes at the new size");
}

/// `info.vision` says what the image side takes and holds; `time_image`
/// (the benchmark's) encodes an image alone and leaves the chat's cache as
/// it was.
#[test]
fn info_and_timing_of_the_image_side() {
    use tramontane::source::DirSource;
    use tramontane::{LoadOptions, Model};
    for (model, max_tokens) in [("mistral3", 8 * 9), ("pixtral", 16 * 17)] {
        let src = DirSource::new(dir(model));
        let mut m = pollster::block_on(Model::load(crate::common::gpu(), &src, &LoadOptions::default(), &mut |_| {})).expect("loads");
        let v = m.info.vision.expect("an image side");
        assert_eq!((v.longest_edge, v.max_image_tokens), (64, max_tokens), "{model}");
        assert!(v.weight_bytes > 0 && v.weight_bytes < m.info.weight_bytes);
        assert!(v.buffer_bytes > 0 && v.buffer_bytes <= m.info.gpu_memory.activations);
        let pic = decode(&image_bytes("small.png"), 1 << 24, "small").unwrap();
        let t = pollster::block_on(m.time_image(&pic)).expect("encodes");
        assert_eq!((t.width, t.height, t.resized), (37, 23, (40, 24)), "{model}");
        assert_eq!(t.patches, 60);
        assert_eq!(t.tokens, if model == "mistral3" { 15 } else { 60 });
        assert!(t.encode_s > 0.0 && t.preprocess_s >= 0.0);
    }
    let text = pollster::block_on(Model::load(crate::common::gpu(), &DirSource::new(fixtures().join("llama_tiny")), &LoadOptions::default(), &mut |_| {})).unwrap();
    assert!(text.info.vision.is_none());
}
