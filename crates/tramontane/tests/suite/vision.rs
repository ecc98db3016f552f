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
        let tokens = ImageTokens {
            image: reference["image_token_id"].as_u64().unwrap() as u32,
            row_break: reference["image_break_token_id"].as_u64().unwrap() as u32,
            end: reference["image_end_token_id"].as_u64().unwrap() as u32,
        };
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
    use tramontane::source::DirSource;
    use tramontane::{LoadOptions, Model};
    for model in ["mistral3", "pixtral"] {
        let src = DirSource::new(dir(model));
        let mut m = pollster::block_on(Model::load(crate::common::gpu(), &src, &LoadOptions::default(), &mut |_| {})).expect("loads");
        assert!(m.config().vision.is_some());
        let reference = json(&dir(model).join("reference.json"));
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
