//! Chat templates: the GGUF's own `tokenizer.chat_template` (Jinja, rendered
//! with minijinja plus Python string methods), or a built-in template for
//! the model family when the GGUF carries none.

use minijinja::{context, Environment};
use serde::{Deserialize, Serialize};

use super::config::Arch;
use crate::error::InferenceError;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_owned(),
            content: content.into(),
        }
    }
}

/// ChatML, used by Qwen and SmolLM (and as the last resort).
const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Gemma's turns; it has no system role, so a system message opens the
/// first user turn.
const GEMMA: &str = "{{ bos_token }}{% set sys = namespace(text='') %}{% for m in messages %}{% if m.role == 'system' %}{% set sys.text = m.content ~ '\n\n' %}{% else %}<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}\n{% if loop.index0 <= 1 and m.role == 'user' %}{{ sys.text }}{% set sys.text = '' %}{% endif %}{{ m.content | trim }}<end_of_turn>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";

/// Llama 3's header-delimited turns.
const LLAMA3: &str = "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Whether the template came from the GGUF (else a family default).
    pub from_model: bool,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("from_model", &self.from_model)
            .finish()
    }
}

fn raise_exception(msg: String) -> Result<String, minijinja::Error> {
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        msg,
    ))
}

impl ChatTemplate {
    /// Compiles `source`, or the family default when it is `None` or does
    /// not compile. `has_token` tells which family default fits the vocabulary.
    pub fn new(
        source: Option<&str>,
        arch: Arch,
        has_token: impl Fn(&str) -> bool,
        bos: &str,
        eos: &str,
    ) -> Self {
        let fallback = || match arch {
            Arch::Gemma3 => GEMMA,
            _ if has_token("<|eot_id|>") && has_token("<|start_header_id|>") => LLAMA3,
            _ => CHATML,
        };
        if let Some(src) = source {
            match Self::compile(src.to_owned()) {
                Ok(env) => {
                    return Self {
                        env,
                        from_model: true,
                        bos: bos.to_owned(),
                        eos: eos.to_owned(),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the model's chat template does not compile; using the family default")
                }
            }
        }
        Self {
            env: Self::compile(fallback().to_owned()).expect("built-in templates compile"),
            from_model: false,
            bos: bos.to_owned(),
            eos: eos.to_owned(),
        }
    }

    fn compile(src: String) -> Result<Environment<'static>, minijinja::Error> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", src)?;
        Ok(env)
    }

    /// Renders `messages` followed by the assistant's turn opening.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, InferenceError> {
        if messages.is_empty() {
            return Err(InferenceError::BadOption("no messages".into()));
        }
        for m in messages {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
                return Err(InferenceError::BadOption(format!(
                    "unknown message role {:?} (expected system, user or assistant)",
                    m.role
                )));
            }
        }
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| InferenceError::Model(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => &self.bos,
            eos_token => &self.eos,
        })
        .map_err(|e| InferenceError::BadOption(format!("chat template: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_defaults_render() {
        let msgs = [
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi"),
        ];
        let g = ChatTemplate::new(None, Arch::Gemma3, |_| false, "<bos>", "<eos>");
        assert_eq!(
            g.render(&msgs).unwrap(),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
        let c = ChatTemplate::new(None, Arch::Qwen2, |_| false, "", "");
        assert_eq!(
            c.render(&msgs).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let l = ChatTemplate::new(
            None,
            Arch::Llama,
            |t| t.starts_with("<|"),
            "<|begin_of_text|>",
            "",
        );
        assert!(l
            .render(&msgs)
            .unwrap()
            .ends_with("<|start_header_id|>assistant<|end_header_id|>\n\n"));
    }

    #[test]
    fn model_template_with_python_methods() {
        let src = "{% for m in messages %}[{{ m.role.upper() }}] {{ m.content.strip() }}\n{% endfor %}{% if add_generation_prompt %}[ASSISTANT]{% endif %}";
        let t = ChatTemplate::new(Some(src), Arch::Llama, |_| false, "", "");
        assert!(t.from_model);
        assert_eq!(
            t.render(&[ChatMessage::new("user", "  hello ")]).unwrap(),
            "[USER] hello\n[ASSISTANT]"
        );
        // A broken template falls back to the family default.
        let t = ChatTemplate::new(Some("{% for %}"), Arch::Qwen3, |_| false, "", "");
        assert!(!t.from_model);
    }

    #[test]
    fn bad_roles_and_empty_chats_are_errors() {
        let t = ChatTemplate::new(None, Arch::Qwen2, |_| false, "", "");
        assert!(matches!(t.render(&[]), Err(InferenceError::BadOption(_))));
        let e = t.render(&[ChatMessage::new("tool", "x")]).unwrap_err();
        assert!(e.to_string().contains("role"), "{e}");
    }
}
