//! What a released stub declares, with its types: the rule that keeps an answer's types the
//! stub's.
//!
//! A check compares what an answer returns with what it should be: `ensure((var - 1.0).abs() <
//! tol, …)`, `EPOCHS > 50`, `ema.updates == 3`. The comparison is Rust's, so it is the answer's
//! types that decide what `<`, `-` or `==` do. An answer that returned a type of its own where
//! the stub says `f64` (`fn transition(…) -> (Fake, Fake)`, `let EPOCHS = Fake;`, a field
//! `updates: Fake`) could make `PartialOrd`, `Sub` or `PartialEq` say what it likes (Rust lets a
//! cell implement a standard trait between its own type and `f64`, `i64` or `&Tensor`), and a
//! check would pass for an answer that fails it. A method's name is guarded already (an answer
//! may not define a method the checks call that the stub does not, `names.rs`), but its types
//! were not. So an answer keeps what the stub declares, as the stub declares it:
//! - a function (`fn vp_alpha(f64) -> f64`): its generics, argument types, return type and
//!   `where` clause (argument names and patterns are free);
//! - a variable, constant or static the stub gives a type (`let BATCH_SIZE: i64`): the same
//!   type, written out (`let BATCH_SIZE = 128;` infers what the stub does not say);
//! - a struct, enum, union, trait or type alias: its header (kind, generics, `where` clause,
//!   supertraits, an alias's type); a struct's fields keep their types (more may be added);
//! - a method of an `impl` block or trait (`ScoreNet::new`, with `Self` read as the type):
//!   its signature as for a function; where the answer defines the stub's type, it defines each
//!   of the stub's methods in an inherent `impl` (else a `Deref` or a trait could answer the
//!   call), and a method of the same name in another `impl` of the type (or of a reference to
//!   it, a blanket `impl<T> … for T`, or a trait's default) has one of the stub's signatures for
//!   that name (a trait method taking `self` can come before an inherent one).
//!
//! A name the answer does not define is not its concern: the checks that read it do not compile
//! (and fail) unless another cell defines it, which `names.rs` guards. An answer defining a
//! declared name in a way this module cannot read (through a `use`) breaks the rule, and so does
//! a text whose brackets do not balance (evcxr may compile part of it); other text that does not
//! parse runs as it is, for the compiler to say what is wrong. Types are compared as written, token for token (`tch::Tensor` is not
//! `Tensor`, `&'a T` is not `&T`), which the finding shows side by side.
//!
//! The source's side of the rule (`Assignment::from_notebook`): a stub declares with its type
//! every variable the cells after it read, and the solution keeps the stub's declarations.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use quote::ToTokens;
use std::collections::{BTreeMap, HashSet};
use syn::ext::IdentExt;

/// One thing an answer cell declares for the checks after it, with its type: an answer keeps
/// it as declared ([`FindingKind::Declaration`](super::FindingKind::Declaration)); the list of
/// a cell's is kept in the release's metadata ([`ReleasedCell::declares`](super::ReleasedCell::declares)).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Declaration {
    /// What is declared: `value:vp_alpha` (a function, variable, constant or static),
    /// `type:Ema` (a struct, enum, union, trait or type alias), `field:Ema.updates` (a
    /// struct's field), `method:ScoreNet::new` (a method of an `impl` block of that type, or of
    /// a trait of that name).
    pub name: String,
    /// Its declaration, tokens printed as Rust is usually written (`fn vp_alpha(f64) -> f64`,
    /// `BATCH_SIZE: i64`, `struct Ema`, `updates: u64`, `fn new(&nn::Path, i64) -> ScoreNet`).
    pub shape: String,
}

/// `tokens` printed as Rust is usually written: a space between two words, after a comma or a
/// lone `:`, around `->`, `=>`, `=`, `+` and `|`, none elsewhere (`&'a mut Vec<(f64, i64)>`).
/// The same tokens always print the same, whatever spacing they were written with.
fn print(tokens: TokenStream) -> String {
    let mut out = String::new();
    print_into(tokens, &mut out);
    out.trim().to_string()
}

fn print_into(tokens: TokenStream, out: &mut String) {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    // Whether the previous tree was a word (an identifier or a literal), or a `'` (a lifetime's).
    let mut word = false;
    let mut k = 0;
    while k < trees.len() {
        match &trees[k] {
            TokenTree::Ident(i) => {
                if word {
                    out.push(' ');
                }
                out.push_str(&i.to_string());
                word = true;
            }
            TokenTree::Literal(l) => {
                if word {
                    out.push(' ');
                }
                out.push_str(&l.to_string());
                word = true;
            }
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => (" { ", " }"),
                    Delimiter::None => ("", ""),
                };
                out.push_str(open);
                print_into(g.stream(), out);
                out.push_str(close);
                // `fn f() where`, `[T; 2] as`: a word after a group is another word.
                word = g.delimiter() != Delimiter::Brace;
            }
            TokenTree::Punct(_) => {
                // A run of joint punctuation is one operator (`::`, `->`, `=>`, `'` + a name).
                let mut op = String::new();
                while let Some(TokenTree::Punct(p)) = trees.get(k) {
                    // A lifetime's `'` starts a run of its own (`+'static`, `&'a`).
                    if p.as_char() == '\'' && !op.is_empty() {
                        break;
                    }
                    op.push(p.as_char());
                    k += 1;
                    if p.spacing() == Spacing::Alone || p.as_char() == '\'' {
                        break;
                    }
                }
                k -= 1;
                match op.as_str() {
                    "," | ";" => out.push_str(&format!("{op} ")),
                    ":" => out.push_str(": "),
                    "->" | "=>" | "=" | "+" | "|" => {
                        while out.ends_with(' ') {
                            out.pop();
                        }
                        out.push_str(&format!(" {op} "));
                    }
                    ">" | ">>" => {
                        out.push_str(&op);
                        // `impl<T> Foo`, `Vec<T> where`: the word after is another word.
                        word = true;
                        k += 1;
                        continue;
                    }
                    _ => {
                        if word && op == "&" {
                            out.push(' ');
                        }
                        out.push_str(&op);
                    }
                }
                word = false;
            }
        }
        k += 1;
    }
}

/// The words a declaration's types are written with: every identifier of `shape` but its
/// keywords and what it declares (a function's, a variable's, a field's or a type's own name).
fn type_words(shape: &str) -> Vec<String> {
    const KEYWORDS: [&str; 18] = [
        "fn", "self", "Self", "mut", "impl", "dyn", "where", "for", "struct", "enum", "union",
        "trait", "type", "const", "async", "unsafe", "extern", "crate",
    ];
    fn words(tokens: TokenStream, lifetime: &mut bool, out: &mut Vec<String>) {
        for tree in tokens {
            let after_quote = std::mem::replace(
                lifetime,
                matches!(&tree, TokenTree::Punct(p) if p.as_char() == '\''),
            );
            match tree {
                TokenTree::Ident(i) if !after_quote => out.push(i.to_string()),
                TokenTree::Group(g) => words(g.stream(), lifetime, out),
                _ => {}
            }
        }
    }
    let Ok(tokens) = shape.parse::<TokenStream>() else {
        return Vec::new();
    };
    // The declared name: the second token of `fn f…`, `struct S…`, the first of `x: T`.
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    let skip = match trees.first() {
        Some(TokenTree::Ident(i)) if KEYWORDS.contains(&i.to_string().as_str()) => 2,
        _ => 1,
    };
    let mut out = Vec::new();
    let rest: TokenStream = trees.into_iter().skip(skip).collect();
    words(rest, &mut false, &mut out);
    out.retain(|w| !KEYWORDS.contains(&w.as_str()));
    out
}

/// `tokens` with every `Self` replaced by `ty` (a method's signature read outside its `impl`).
fn self_as(tokens: TokenStream, ty: &TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .flat_map(|tree| match tree {
            TokenTree::Ident(i) if i == "Self" => ty.clone().into_iter().collect::<Vec<_>>(),
            TokenTree::Group(g) => {
                let mut inner = proc_macro2::Group::new(g.delimiter(), self_as(g.stream(), ty));
                inner.set_span(g.span());
                vec![TokenTree::Group(inner)]
            }
            other => vec![other],
        })
        .collect()
}

/// A function's or method's signature without argument names: `fn name<G>(T, U) -> R where …`.
fn signature(sig: &syn::Signature, self_ty: Option<&TokenStream>) -> String {
    let mut tokens = TokenStream::new();
    sig.constness.to_tokens(&mut tokens);
    sig.asyncness.to_tokens(&mut tokens);
    sig.unsafety.to_tokens(&mut tokens);
    sig.abi.to_tokens(&mut tokens);
    sig.fn_token.to_tokens(&mut tokens);
    sig.ident.unraw().to_tokens(&mut tokens);
    // Lifetimes are left out: they name no type (`fn f<'a>(&'a self)` is `fn f(&self)`).
    let mut generics = sig.generics.clone();
    generics.params = generics
        .params
        .into_iter()
        .filter(|p| !matches!(p, syn::GenericParam::Lifetime(_)))
        .collect();
    generics.to_tokens(&mut tokens);
    let mut args = TokenStream::new();
    for (k, input) in sig.inputs.iter().enumerate() {
        if k > 0 {
            <syn::Token![,]>::default().to_tokens(&mut args);
        }
        match input {
            syn::FnArg::Receiver(r) => {
                // `self`, `&self`, `&mut self` however written (`&'a self`, `self: &Self`;
                // a `mut` binding of `self` is the body's), else `self: Box<Self>`.
                let ty = print(without_lifetimes(r.ty.to_token_stream()));
                match ty.as_str() {
                    "Self" => r.self_token.to_tokens(&mut args),
                    "&Self" | "&mut Self" => {
                        <syn::Token![&]>::default().to_tokens(&mut args);
                        if ty == "&mut Self" {
                            <syn::Token![mut]>::default().to_tokens(&mut args);
                        }
                        r.self_token.to_tokens(&mut args);
                    }
                    _ => {
                        r.self_token.to_tokens(&mut args);
                        <syn::Token![:]>::default().to_tokens(&mut args);
                        r.ty.to_tokens(&mut args);
                    }
                }
            }
            syn::FnArg::Typed(t) => t.ty.to_tokens(&mut args),
        }
    }
    if let Some(v) = &sig.variadic {
        v.dots.to_tokens(&mut args);
    }
    proc_macro2::Group::new(Delimiter::Parenthesis, args).to_tokens(&mut tokens);
    sig.output.to_tokens(&mut tokens);
    sig.generics.where_clause.to_tokens(&mut tokens);
    let tokens = without_lifetimes(tokens);
    print(match self_ty {
        Some(ty) => self_as(tokens, ty),
        None => tokens,
    })
}

/// `tokens` without the lifetimes of references (`&'a T` is `&T`).
fn without_lifetimes(tokens: TokenStream) -> TokenStream {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    let mut out = Vec::with_capacity(trees.len());
    let mut k = 0;
    while k < trees.len() {
        let tree = &trees[k];
        let reference = matches!(tree, TokenTree::Punct(p) if p.as_char() == '&');
        let lifetime = matches!(trees.get(k + 1), Some(TokenTree::Punct(p)) if p.as_char() == '\'')
            && matches!(trees.get(k + 2), Some(TokenTree::Ident(_)));
        out.push(match tree {
            TokenTree::Group(g) => {
                let mut inner =
                    proc_macro2::Group::new(g.delimiter(), without_lifetimes(g.stream()));
                inner.set_span(g.span());
                TokenTree::Group(inner)
            }
            // A `&` whose lifetime is left out stands alone (`&&T` is printed apart from `&& x`).
            TokenTree::Punct(_) if reference => {
                TokenTree::Punct(proc_macro2::Punct::new('&', Spacing::Alone))
            }
            other => other.clone(),
        });
        k += if reference && lifetime { 3 } else { 1 };
    }
    out.into_iter().collect()
}

/// Who owns a method: the base name of an `impl` block's type (`&T`, `&mut T` and `T<…>` all
/// `T`), with whether that type is a parameter of the `impl` itself (`impl<T> Tr for T`), or a
/// trait (its default methods).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// An `impl` block's type, by base name; `generic` where it is one of the block's
    /// parameters; `inherent` where the block implements no trait.
    Type {
        name: String,
        generic: bool,
        inherent: bool,
        /// Whether the type is a reference (`impl Tr for &T`).
        reference: bool,
    },
    /// A trait's default method.
    Trait(String),
}

impl Owner {
    fn name(&self) -> &str {
        match self {
            Owner::Type { name, .. } | Owner::Trait(name) => name,
        }
    }
}

/// A method found in a cell.
#[derive(Debug)]
struct Method {
    owner: Owner,
    name: String,
    shape: String,
    /// Whether it has a body (a trait's method may not).
    body: bool,
}

/// What a cell declares at its top level, with its types.
#[derive(Debug, Default)]
struct Declared {
    /// `value:` and `type:` names with the shape of each of their declarations (a name
    /// declared twice has two).
    items: BTreeMap<String, Vec<String>>,
    /// `Type.field` → the field's type, for the cell's structs.
    fields: BTreeMap<String, String>,
    /// The structs declared (their fields are in `fields`).
    structs: HashSet<String>,
    methods: Vec<Method>,
}

impl Declared {
    fn add(&mut self, name: String, shape: String) {
        self.items.entry(name).or_default().push(shape);
    }
}

/// The base name of a type: `T` for `T`, `&T`, `&mut T`, `m::T<U>`; `None` for a tuple, an
/// array, a `dyn` or `impl` type.
fn base_name(ty: &syn::Type) -> Option<String> {
    match ty {
        syn::Type::Reference(r) => base_name(&r.elem),
        syn::Type::Paren(p) => base_name(&p.elem),
        syn::Type::Group(g) => base_name(&g.elem),
        syn::Type::Path(p) if p.qself.is_none() => {
            p.path.segments.last().map(|s| s.ident.unraw().to_string())
        }
        _ => None,
    }
}

/// The names `pat` binds, each with its type where `ty` (the `let`'s annotation) says it:
/// `let (a, b): (f64, i64)` gives `a: f64`, `b: i64`; an unannotated binding reads `a: _`.
fn let_bindings(pat: &syn::Pat, ty: Option<&syn::Type>, out: &mut Vec<(String, String)>) {
    let untyped = |pat: &syn::Pat, out: &mut Vec<(String, String)>| {
        let mut names = Vec::new();
        super::names::bound_names(pat, "value", &mut names);
        for name in names {
            let bare = name.trim_start_matches("value:").to_string();
            out.push((name, format!("{bare}: _")));
        }
    };
    match (pat, ty) {
        (syn::Pat::Type(t), None) => let_bindings(&t.pat, Some(&t.ty), out),
        (syn::Pat::Ident(i), Some(ty)) if i.subpat.is_none() && i.by_ref.is_none() => {
            let bare = i.ident.unraw().to_string();
            out.push((
                format!("value:{bare}"),
                format!("{bare}: {}", print(ty.to_token_stream())),
            ));
        }
        (syn::Pat::Paren(p), ty) => let_bindings(&p.pat, ty, out),
        (syn::Pat::Tuple(p), Some(syn::Type::Tuple(t))) if p.elems.len() == t.elems.len() => {
            for (pat, ty) in p.elems.iter().zip(&t.elems) {
                let_bindings(pat, Some(ty), out);
            }
        }
        // `let [a, b]: [f64; 2]`
        (syn::Pat::Slice(p), Some(syn::Type::Array(t))) => {
            for pat in &p.elems {
                if !matches!(pat, syn::Pat::Rest(_)) {
                    let_bindings(pat, Some(&t.elem), out);
                }
            }
        }
        (syn::Pat::Tuple(p), Some(syn::Type::Paren(t))) if p.elems.len() == 1 => {
            let_bindings(&p.elems[0], Some(&t.elem), out)
        }
        (pat, _) => untyped(pat, out),
    }
}

/// A struct's, enum's, union's or trait's header: its kind, name, generics, `where` clause and
/// (a trait's) supertraits.
fn header(kind: &str, ident: &syn::Ident, generics: &syn::Generics, extra: TokenStream) -> String {
    let mut tokens = TokenStream::new();
    tokens.extend(std::iter::once(TokenTree::Ident(proc_macro2::Ident::new(
        kind,
        proc_macro2::Span::call_site(),
    ))));
    ident.unraw().to_tokens(&mut tokens);
    generics.to_tokens(&mut tokens);
    tokens.extend(extra);
    generics.where_clause.to_tokens(&mut tokens);
    print(tokens)
}

/// What `code` declares at its top level; `None` where it does not parse.
fn declared(code: &str) -> Option<Declared> {
    let block = super::names::parse(code)?;
    let mut out = Declared::default();
    for stmt in &block.stmts {
        match stmt {
            syn::Stmt::Local(local) => {
                let mut binds = Vec::new();
                let_bindings(&local.pat, None, &mut binds);
                for (name, shape) in binds {
                    out.add(name, shape);
                }
            }
            syn::Stmt::Item(item) => item_declared(item, &mut out),
            _ => {}
        }
    }
    super::names::each_method(&block, |site, sig, body| {
        out.methods.extend(method(site, sig, body));
    });
    Some(out)
}

fn item_declared(item: &syn::Item, out: &mut Declared) {
    let typed = |ident: &syn::Ident, ty: &syn::Type| {
        let bare = ident.unraw().to_string();
        (
            format!("value:{bare}"),
            format!("{bare}: {}", print(ty.to_token_stream())),
        )
    };
    match item {
        syn::Item::Fn(f) => out.add(
            format!("value:{}", f.sig.ident.unraw()),
            signature(&f.sig, None),
        ),
        syn::Item::Const(c) => {
            let (name, shape) = typed(&c.ident, &c.ty);
            out.add(name, shape);
        }
        syn::Item::Static(s) => {
            let (name, shape) = typed(&s.ident, &s.ty);
            out.add(name, shape);
        }
        syn::Item::Struct(s) => {
            let name = s.ident.unraw().to_string();
            let shape = header("struct", &s.ident, &s.generics, TokenStream::new());
            out.add(format!("type:{name}"), shape.clone());
            if !matches!(s.fields, syn::Fields::Named(_)) {
                // A tuple or unit struct is also a value: its constructor.
                out.add(format!("value:{name}"), shape);
            }
            for (k, field) in s.fields.iter().enumerate() {
                let field_name = field
                    .ident
                    .as_ref()
                    .map_or(k.to_string(), |i| i.unraw().to_string());
                out.fields.insert(
                    format!("{name}.{field_name}"),
                    format!("{field_name}: {}", print(field.ty.to_token_stream())),
                );
            }
            out.structs.insert(name);
        }
        syn::Item::Enum(e) => {
            let mut variants = TokenStream::new();
            for v in &e.variants {
                v.ident.unraw().to_tokens(&mut variants);
                v.fields.to_tokens(&mut variants);
                <syn::Token![,]>::default().to_tokens(&mut variants);
            }
            let body = proc_macro2::Group::new(Delimiter::Brace, variants).into_token_stream();
            out.add(
                format!("type:{}", e.ident.unraw()),
                header("enum", &e.ident, &e.generics, body),
            );
        }
        syn::Item::Union(u) => out.add(
            format!("type:{}", u.ident.unraw()),
            header("union", &u.ident, &u.generics, u.fields.to_token_stream()),
        ),
        syn::Item::Type(t) => {
            let mut tokens = TokenStream::new();
            t.eq_token.to_tokens(&mut tokens);
            t.ty.to_tokens(&mut tokens);
            out.add(
                format!("type:{}", t.ident.unraw()),
                header("type", &t.ident, &t.generics, tokens),
            );
        }
        syn::Item::Trait(t) => {
            let mut bounds = TokenStream::new();
            if !t.supertraits.is_empty() {
                t.colon_token.to_tokens(&mut bounds);
                t.supertraits.to_tokens(&mut bounds);
            }
            let name = t.ident.unraw().to_string();
            out.add(
                format!("type:{name}"),
                header("trait", &t.ident, &t.generics, bounds),
            );
        }
        _ => {}
    }
}

/// A method of the cell, with who owns it (`names::each_method`: at any depth).
fn method(site: super::names::MethodSite, sig: &syn::Signature, body: bool) -> Option<Method> {
    let (owner, self_ty) = match site {
        super::names::MethodSite::Trait(t) => (Owner::Trait(t.ident.unraw().to_string()), None),
        super::names::MethodSite::Impl(i) => {
            let name = base_name(&i.self_ty)?;
            let owner = Owner::Type {
                generic: i.generics.type_params().any(|p| p.ident.unraw() == name),
                name,
                inherent: i.trait_.is_none(),
                reference: matches!(*i.self_ty, syn::Type::Reference(_)),
            };
            (owner, Some(i.self_ty.to_token_stream()))
        }
    };
    Some(Method {
        owner,
        name: sig.ident.unraw().to_string(),
        shape: signature(sig, self_ty.as_ref()),
        body,
    })
}

/// The receiver of a method's `shape` (`self`, `&self`, `&mut self`), if it has one of these.
fn receiver(shape: &str) -> Option<&str> {
    let args = shape.split_once('(')?.1;
    let first = args.split([',', ')']).next()?.trim();
    ["self", "&self", "&mut self"]
        .into_iter()
        .find(|r| *r == first)
}

/// What a stub declares: every name with its type. A trait's methods are declared whether or
/// not they have a default; an `impl` block's under its type's base name.
pub(super) fn declarations(stub: &str) -> Option<Vec<Declaration>> {
    let d = declared(stub)?;
    let mut out = Vec::new();
    for (name, shapes) in &d.items {
        // A variable bound without a type declares none (the source may not leave one that
        // the cells after it read so, `untyped_variables`).
        for shape in shapes.iter().filter(|s| !s.ends_with(": _")) {
            out.push(Declaration {
                name: name.clone(),
                shape: shape.clone(),
            });
        }
    }
    for (name, shape) in &d.fields {
        out.push(Declaration {
            name: format!("field:{name}"),
            shape: shape.clone(),
        });
    }
    for m in &d.methods {
        out.push(Declaration {
            name: format!("method:{}::{}", m.owner.name(), m.name),
            shape: m.shape.clone(),
        });
    }
    out.sort_by(|a, b| (&a.name, &a.shape).cmp(&(&b.name, &b.shape)));
    out.dedup();
    Some(out)
}

/// What an answer cell declares for the checks: what its `stub` declares, and what its
/// `solution` declares of the names the cells after it read that the stub does not define
/// (`extra`, from `names.rs`: a name the stub leaves to the student, which the markdown asks
/// for). A struct's fields and methods come with it, a method with its name. `None` where the
/// stub or (with `extra` names) the solution does not parse.
pub(super) fn declarations_for(
    stub: &str,
    solution: &str,
    extra: &[String],
) -> Option<Vec<Declaration>> {
    let mut out = declarations(stub)?;
    if extra.is_empty() {
        return Some(out);
    }
    let has = |name: &str| extra.iter().any(|e| e == name);
    for d in declarations(solution)? {
        let (kind, bare) = d.name.split_once(':').unwrap_or(("", &d.name));
        let keep = match kind {
            "field" => has(&format!(
                "type:{}",
                bare.split_once('.').map_or(bare, |(t, _)| t)
            )),
            "method" => {
                let (ty, method) = bare.split_once("::").unwrap_or((bare, ""));
                has(&format!("type:{ty}")) || has(&format!("method:{method}"))
            }
            _ => has(&d.name),
        };
        if keep {
            out.push(d);
        }
    }
    out.sort_by(|a, b| (&a.name, &a.shape).cmp(&(&b.name, &b.shape)));
    out.dedup();
    Some(out)
}

/// The variables `stub` binds without saying their types (`let EPS = f(…);`), by name
/// (`value:EPS`): an answer could bind them to a value of a type of its own.
pub(super) fn untyped_variables(stub: &str) -> Vec<String> {
    declared(stub)
        .map(|d| {
            d.items
                .iter()
                .filter(|(_, shapes)| shapes.iter().any(|s| s.ends_with(": _")))
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Where `answer` breaks the stub's declarations `declared` (see the [module docs](self)), each
/// in words; empty where it keeps them.
pub(super) fn changed(answer: &str, declared_by_stub: &[Declaration]) -> Vec<String> {
    if declared_by_stub.is_empty() {
        return Vec::new();
    }
    let Some(theirs) = declared(answer) else {
        // Tokens that do not parse: the kernel cannot compile them either, and the student
        // sees the compiler's error. A text that does not even lex (brackets that do not
        // balance) evcxr may compile in part (`reach.rs`), so what it declares is unknown.
        let lexes = super::names::without_commands(answer)
            .parse::<TokenStream>()
            .is_ok();
        return match lexes {
            true => Vec::new(),
            false => vec![
                "is not Rust whose brackets balance, so what it declares cannot be read \
                 (the kernel may compile part of such a text)"
                    .into(),
            ],
        };
    };
    let defined = super::names::defined(answer)
        .map(|d| d.names)
        .unwrap_or_default();
    let mut why = Vec::new();
    let mut pinned: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for d in declared_by_stub {
        pinned.entry(&d.name).or_default().push(&d.shape);
    }
    let stub_types: Vec<&str> = pinned
        .keys()
        .filter_map(|n| n.strip_prefix("type:"))
        .collect();
    for (name, shapes) in &pinned {
        let (kind, bare) = name.split_once(':').unwrap_or(("", name));
        match kind {
            "value" | "type" if defined.iter().any(|n| n == name) => {
                let found = theirs.items.get(*name).map_or(&[][..], Vec::as_slice);
                if found.is_empty() {
                    why.push(format!(
                        "declares `{bare}` in a way the grader cannot read (a `use`?) where the stub has `{}`",
                        shapes[0]
                    ));
                }
                for shape in found {
                    if !shapes.contains(&shape.as_str()) {
                        why.push(format!(
                            "declares `{shape}` where the stub has `{}`",
                            shapes[0]
                        ));
                    }
                }
            }
            "field" => {
                let ty = bare.split_once('.').map_or(bare, |(ty, _)| ty);
                if theirs.structs.contains(ty) {
                    match theirs.fields.get(bare) {
                        Some(shape) if !shapes.contains(&shape.as_str()) => why.push(format!(
                            "gives `{ty}` the field `{shape}` where the stub has `{}`",
                            shapes[0]
                        )),
                        None => why.push(format!("leaves out `{ty}`'s field `{}`", shapes[0])),
                        _ => {}
                    }
                }
            }
            "method" => {
                let (ty, method) = bare.split_once("::").unwrap_or((bare, ""));
                let inherent = theirs.methods.iter().any(|m| {
                    m.name == method
                        && matches!(&m.owner, Owner::Type { name, inherent: true, .. } if name == ty)
                });
                if stub_types.contains(&ty) && theirs.structs.contains(ty) && !inherent {
                    why.push(format!(
                        "declares `{ty}` without the method `{}` of its `impl` block",
                        shapes[0]
                    ));
                }
            }
            _ => {}
        }
    }
    // A name the declarations' types are written with (`f64`, `Tensor`, `nn`, `Vec`), defined
    // by the answer: the same tokens would then name its own type (`type f64 = Fake;`).
    let written_with: std::collections::BTreeSet<String> = declared_by_stub
        .iter()
        .flat_map(|d| type_words(&d.shape))
        .collect();
    let mut shadowed = std::collections::BTreeSet::new();
    for name in &defined {
        let Some(("type" | "value", bare)) = name.split_once(':') else {
            continue;
        };
        if written_with.contains(bare) && !pinned.contains_key(name.as_str()) {
            shadowed.insert(bare);
        }
    }
    for bare in shadowed {
        why.push(format!(
            "defines `{bare}`, a name the stub's declarations are written with (they would name \
             the answer's own)"
        ));
    }
    // Every method the answer defines with a name the stub declares, where a call on the stub's
    // types could reach it.
    for m in &theirs.methods {
        let own = format!("method:{}::{}", m.owner.name(), m.name);
        // A trait's method on the stub's type itself with the receiver of the stub's method
        // (`impl nn::Module for Block { fn forward(&self, …) }` beside `Block::forward(&self,
        // …)`): Rust tries the inherent one first at that receiver, and no earlier one is new.
        if let (
            Owner::Type {
                inherent: false,
                reference: false,
                generic: false,
                ..
            },
            Some(shapes),
        ) = (&m.owner, pinned.get(own.as_str()))
        {
            let theirs = receiver(&m.shape);
            if theirs.is_some() && shapes.iter().all(|s| receiver(s) == theirs) {
                continue;
            }
        }
        let allowed: Vec<&str> = match pinned.get(own.as_str()) {
            Some(shapes) => shapes.clone(),
            None => {
                // A trait's method without a default is reached only through an `impl`.
                let reachable = match &m.owner {
                    Owner::Type { name, generic, .. } => {
                        *generic || stub_types.contains(&name.as_str())
                    }
                    Owner::Trait(_) => m.body,
                };
                if !reachable {
                    continue;
                }
                let suffix = format!("::{}", m.name);
                pinned
                    .iter()
                    .filter(|(n, _)| n.starts_with("method:") && n.ends_with(&suffix))
                    .flat_map(|(_, shapes)| shapes.iter().copied())
                    .collect()
            }
        };
        if allowed.is_empty() || allowed.contains(&m.shape.as_str()) {
            continue;
        }
        why.push(format!(
            "declares the method `{}` ({}) where the stub has `{}`",
            m.shape,
            match &m.owner {
                Owner::Type { name, .. } => format!("for `{name}`"),
                Owner::Trait(name) => format!("of the trait `{name}`"),
            },
            allowed[0]
        ));
    }
    why.sort();
    why.dedup();
    why
}

#[cfg(test)]
mod tests {
    use super::{changed, declarations, declarations_for, print, untyped_variables};

    fn shapes(code: &str) -> Vec<String> {
        declarations(code)
            .unwrap()
            .into_iter()
            .map(|d| format!("{} = {}", d.name, d.shape))
            .collect()
    }

    #[test]
    fn declarations_print_the_same_whatever_the_spacing() {
        for (a, b) in [
            ("&'a  mut Vec<( f64,i64 )>", "&'a mut Vec<(f64, i64)>"),
            (
                "impl Fn(&Tensor)->Tensor+'static",
                "impl Fn(&Tensor) -> Tensor + 'static",
            ),
            ("[f64;3]", "[f64; 3]"),
            ("Vec<Vec<T>>", "Vec<Vec<T>>"),
        ] {
            let tokens: proc_macro2::TokenStream = a.parse().unwrap();
            assert_eq!(print(tokens), b);
        }
        let stub = "fn f<T: Into<f64>>(mut x: T, (a, b): (i64, i64)) -> f64 where T: Copy { todo!() }\n\
                    let N: i64 = todo!();\nlet (a, b): (f64, Tensor) = todo!();\nlet free = 3;\n\
                    const C: usize = 2;\nstruct S<M: nn::Module> { m: M, pub sigma: f64 }\n\
                    impl<M: nn::Module> S<M> { fn new(m: M) -> Self { todo!() } fn go(&mut self, x: &Tensor) {} }\n\
                    trait Tr: Clone { fn get(self) -> f64; }";
        assert_eq!(
            shapes(stub),
            [
                "field:S.m = m: M",
                "field:S.sigma = sigma: f64",
                "method:S::go = fn go(&mut self, &Tensor)",
                "method:S::new = fn new(M) -> S<M>",
                "method:Tr::get = fn get(self) -> f64",
                "type:S = struct S<M: nn::Module>",
                "type:Tr = trait Tr: Clone",
                "value:C = C: usize",
                "value:N = N: i64",
                "value:a = a: f64",
                "value:b = b: Tensor",
                "value:f = fn f<T: Into<f64>>(T, (i64, i64)) -> f64 where T: Copy",
            ]
        );
        assert_eq!(untyped_variables(stub), ["value:free"]);
    }

    const STUB: &str = "fn f(x: f64) -> f64 { todo!() }\nlet N: i64 = todo!();\nlet s: nn::Sequential = todo!();\n\
                        struct Ema { updates: u64, averages: Vec<Tensor> }\n\
                        impl Ema { fn new(m: f64) -> Self { todo!() } fn update(&mut self) { todo!() } }";

    fn why(answer: &str) -> Vec<String> {
        changed(answer, &declarations(STUB).unwrap())
    }

    const EMA: &str = "struct Ema { updates: u64, averages: Vec<Tensor> }\n\
                       impl Ema { fn new(momentum: f64) -> Ema { todo!() } fn update(&mut self) {} }";

    #[test]
    fn an_answer_may_write_its_own_code_within_the_stubs_declarations() {
        for answer in [
            // Other argument names and patterns, `Ema` for `Self`, a constant for a variable,
            // a field and a helper added, a helper type with its own `new`.
            format!("fn f(mut y: f64) -> f64 {{ y *= 2.0; y }}\nconst N: i64 = 3;\n{EMA}"),
            "fn f(x: f64) -> f64 { h(x) }\nfn h(x: f64) -> f64 { x }\nlet N: i64 = 3;\n\
             struct Ema { updates: u64, averages: Vec<Tensor>, extra: f64 }\n\
             impl Ema { fn new(m: f64) -> Self { todo!() } fn update(&mut self) {} fn more(&self) {} }\n\
             struct Helper;\nimpl Helper { fn new() -> Self { Helper } }"
                .to_string(),
            // Names the answer leaves out: the checks that read them do not compile.
            "let N: i64 = 3;".into(),
            // Variables named like a field or an argument; a crate's module under its own name.
            "let updates = 3;\nlet m = 2.0;\nuse tch::nn;\nlet s: nn::Sequential = nn::seq();".into(),
            // An array pattern; `self` and lifetimes written out; a trait's `update` on `Ema`
            // with the receiver of `Ema::update` (the inherent one comes first).
            "let [N, M]: [i64; 2] = [1, 2];".into(),
            "struct Ema { updates: u64, averages: Vec<Tensor> }\n\
             impl Ema { fn new<'a>(m: f64) -> Ema { todo!() } fn update(self: &mut Self) {} }\n\
             trait Step { fn update(&mut self); }\nimpl Step for Ema { fn update(&mut self) {} }"
                .into(),
            // A trait of its own whose `update` has the stub's signature, and without a default.
            format!("{EMA}\nfn f(x: f64) -> f64 {{ x }}\ntrait Step {{ fn update(&mut self); fn new(m: f64) -> Ema {{ todo!() }} }}"),
        ] {
            assert_eq!(why(&answer), Vec::<String>::new(), "{answer}");
        }
    }

    #[test]
    fn an_answer_that_changes_a_declared_type_is_found() {
        for (answer, expect) in [
            ("fn f(x: f64) -> Fake { Fake }", "declares `fn f(f64) -> Fake` where the stub has `fn f(f64) -> f64`"),
            ("fn f(x: f32) -> f64 { 0.0 }", "`fn f(f32) -> f64`"),
            ("fn f<T>(x: T) -> f64 { 0.0 }", "`fn f<T>(T) -> f64`"),
            ("let N = 3;", "declares `N: _` where the stub has `N: i64`"),
            ("let N: Fake = Fake;", "`N: Fake`"),
            ("let f = |x: f64| x;", "declares `f: _`"),
            ("mod m { pub fn f(x: f64) -> f64 { x } }\nuse m::f;", "declares `f` in a way the grader cannot read"),
            ("fn f(x: f64) -> f64 { x }\nfn f(x: f64) -> Fake { Fake }", "`fn f(f64) -> Fake`"),
            (
                "struct Ema { updates: Fake, averages: Vec<Tensor> }\nimpl Ema { fn new(m: f64) -> Self { todo!() } fn update(&mut self) {} }",
                "gives `Ema` the field `updates: Fake` where the stub has `updates: u64`",
            ),
            (
                "struct Ema { averages: Vec<Tensor> }\nimpl Ema { fn new(m: f64) -> Self { todo!() } fn update(&mut self) {} }",
                "leaves out `Ema`'s field `updates: u64`",
            ),
            ("struct Ema<T> { updates: u64, averages: Vec<Tensor>, t: T }", "declares `struct Ema<T>` where the stub has `struct Ema`"),
            ("type Ema = Fake;", "`type Ema = Fake`"),
            // Without its inherent `new`, `Ema::new` or `ema.update()` could reach a trait's or
            // a `Deref` target's.
            (
                "struct Ema { updates: u64, averages: Vec<Tensor> }\nimpl Ema { fn update(&mut self) {} }",
                "declares `Ema` without the method `fn new(f64) -> Ema`",
            ),
            (&format!("{EMA}\nimpl Ema {{ fn update(self) -> Fake {{ Fake }} }}"), "`fn update(self) -> Fake` (for `Ema`) where the stub has `fn update(&mut self)`"),
            (&format!("{EMA}\ntrait T {{ fn update(self) -> Fake; }}\nimpl T for &mut Ema {{ fn update(self) -> Fake {{ Fake }} }}"), "`fn update(self) -> Fake` (for `Ema`)"),
            (&format!("{EMA}\ntrait T {{ fn update(self) -> Fake {{ Fake }} }}"), "`fn update(self) -> Fake` (of the trait `T`)"),
            (&format!("{EMA}\ntrait T {{ fn update(self) -> Fake; }}\nimpl<X> T for X {{ fn update(self) -> Fake {{ Fake }} }}"), "`fn update(self) -> Fake` (for `X`)"),
            ("fn f(x: f64) -> f64 { x", "is not Rust whose brackets balance"),
            // A trait method taking `self` comes before `&mut self` and a module hides nothing:
            // an `impl` applies wherever it is written.
            (&format!("{EMA}\nmod t {{ pub trait T {{ fn update(self) -> f32; }}\n  impl T for super::Ema {{ fn update(self) -> f32 {{ 0.1 }} }} }}\nuse t::T as _;"), "`fn update(self) -> f32` (for `Ema`)"),
            (&format!("{EMA}\ntrait T {{ fn update(self) -> f32; }}\nfn g() {{ impl T for Ema {{ fn update(self) -> f32 {{ 0.1 }} }} }}"), "`fn update(self) -> f32` (for `Ema`)"),
            (&format!("{EMA}\ntrait T {{ fn update(self) -> f32; }}\nconst _: () = {{ impl T for Ema {{ fn update(self) -> f32 {{ 0.1 }} }} }};"), "`fn update(self) -> f32` (for `Ema`)"),
            // The same tokens naming the answer's own types.
            ("type f64 = Fake;\nfn f(x: f64) -> f64 { x }", "defines `f64`, a name the stub"),
            ("use std::collections::HashMap as Tensor;", "defines `Tensor`, a name"),
            ("struct Fake(u64);\ntype i64 = Fake;\nlet N: i64 = Fake(1000);", "defines `i64`, a name"),
            ("use core::primitive::f32 as f64;\nfn f(x: f64) -> f64 { x }", "defines `f64`, a name the stub"),
            ("mod nn { pub struct Sequential; }", "defines `nn`, a name"),
        ] {
            let found = why(answer);
            assert!(found.iter().any(|w| w.contains(expect)), "{answer}: {found:?}");
        }
        // A stub that declares nothing: nothing to keep, even in a text that is not Rust.
        assert!(changed("fn f( {", &declarations("println!(\"hi\");").unwrap()).is_empty());
        // A syntax error whose brackets balance: the compiler says what is wrong.
        assert!(why("fn f(x: f64) -> f64 { x + }").is_empty());
    }

    #[test]
    fn what_the_solution_declares_for_the_checks_comes_with_the_stubs() {
        let stub = "fn f(x: f64) -> f64 { todo!() }\ntodo!(\"your code here\")";
        let solution = "fn f(x: f64) -> f64 { 2.0 * x }\nstruct Own { k: f64 }\nimpl Own { fn get(&self) -> f64 { self.k } }\nfn scale() -> f64 { 2.0 }\nfn helper() {}";
        let names =
            |ds: Vec<super::Declaration>| ds.into_iter().map(|d| d.name).collect::<Vec<_>>();
        assert_eq!(
            names(
                declarations_for(stub, solution, &["value:scale".into(), "type:Own".into()])
                    .unwrap()
            ),
            [
                "field:Own.k",
                "method:Own::get",
                "type:Own",
                "value:f",
                "value:scale"
            ]
        );
        assert_eq!(
            names(declarations_for(stub, solution, &[]).unwrap()),
            ["value:f"]
        );
    }
}
