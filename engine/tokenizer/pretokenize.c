/* engine/tokenizer/pretokenize.c — hand-written matchers for the pre-tokenizer regexes in
 * pretokenize.h. Each matcher returns the end of the leftmost match at a position, trying the
 * alternatives in regex order with the backtracking outcome Oniguruma would reach. */
#include "engine/tokenizer/pretokenize.h"

#include <string.h>
#include <utf8proc.h>

typedef enum char_class { CLS_OTHER, CLS_LETTER, CLS_NUMBER, CLS_SPACE } char_class;

typedef struct text_view {
    const uint8_t *s;
    size_t len; /* whole text: characters are always decoded against it */
} text_view;

static bool is_white_space(int32_t cp) {
    if (cp < 0x80) return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

static char_class classify(int32_t cp) {
    if (cp < 0) return CLS_OTHER; /* invalid byte */
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return CLS_LETTER;
        if (cp >= '0' && cp <= '9') return CLS_NUMBER;
        return is_white_space(cp) ? CLS_SPACE : CLS_OTHER;
    }
    if (is_white_space(cp)) return CLS_SPACE;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: return CLS_LETTER;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO: return CLS_NUMBER;
    default: return CLS_OTHER;
    }
}

/* Decodes the character at pos: its byte length, code point (-1 for an invalid byte), class. */
static size_t char_at(const text_view *t, size_t pos, int32_t *cp_out, char_class *cls) {
    uint8_t b = t->s[pos];
    int32_t cp = b;
    size_t n = 1;
    if (b >= 0x80) {
        utf8proc_int32_t c;
        utf8proc_ssize_t got = utf8proc_iterate(t->s + pos, (utf8proc_ssize_t)(t->len - pos), &c);
        if (got > 0) {
            cp = c;
            n = (size_t)got;
        } else {
            cp = -1;
        }
    }
    if (cp_out) *cp_out = cp;
    if (cls) *cls = classify(cp);
    return n;
}

static char_class class_at(const text_view *t, size_t pos) {
    char_class cls;
    char_at(t, pos, NULL, &cls);
    return cls;
}

/* End of the run of characters of class cls starting at pos (bounded by end). */
static size_t run_end(const text_view *t, size_t pos, size_t end, char_class cls) {
    while (pos < end) {
        char_class c;
        size_t n = char_at(t, pos, NULL, &c);
        if (c != cls) break;
        pos += n;
    }
    return pos;
}

/* \s+(?!\S)|\s+ at a whitespace character: the whole run if it reaches end, else the run less
 * its last character (that one leads the next piece), else the single character. */
static size_t match_space_run(const text_view *t, size_t pos, size_t end) {
    size_t last = pos, p = pos;
    while (p < end) {
        char_class c;
        size_t n = char_at(t, p, NULL, &c);
        if (c != CLS_SPACE) break;
        last = p;
        p += n;
    }
    if (p == end || last == pos) return p;
    return last;
}

static bool is_contraction_gpt2(const text_view *t, size_t pos, size_t end, size_t *out) {
    const uint8_t *s = t->s;
    if (s[pos] != '\'' || pos + 1 >= end) return false;
    uint8_t c1 = s[pos + 1];
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
        *out = pos + 2;
        return true;
    }
    if (pos + 2 < end) {
        uint8_t c2 = s[pos + 2];
        if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
            *out = pos + 3;
            return true;
        }
    }
    return false;
}

static size_t match_gpt2(const text_view *t, size_t pos, size_t end) {
    size_t out;
    if (is_contraction_gpt2(t, pos, end, &out)) return out;
    /* ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: the class after an optional space decides. */
    size_t q = (t->s[pos] == ' ' && pos + 1 < end) ? pos + 1 : pos;
    char_class c = class_at(t, q);
    if (c != CLS_SPACE) return run_end(t, q, end, c);
    return match_space_run(t, pos, end);
}

/* One case-insensitive ASCII letter of a Llama-3 contraction; U+017F (long s) folds to 's'. */
static size_t fold_letter(const text_view *t, size_t pos, size_t end, char *letter) {
    if (pos >= end) return 0;
    uint8_t b = t->s[pos];
    if (b < 0x80) {
        *letter = (char)(b | 0x20);
        return ((b | 0x20) >= 'a' && (b | 0x20) <= 'z') ? 1 : 0;
    }
    if (b == 0xC5 && pos + 1 < end && t->s[pos + 1] == 0xBF) {
        *letter = 's';
        return 2;
    }
    return 0;
}

static bool is_contraction_llama3(const text_view *t, size_t pos, size_t end, size_t *out) {
    if (t->s[pos] != '\'') return false;
    char c1, c2;
    size_t n1 = fold_letter(t, pos + 1, end, &c1);
    if (n1 == 0) return false;
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
        *out = pos + 1 + n1;
        return true;
    }
    size_t n2 = fold_letter(t, pos + 1 + n1, end, &c2);
    if (n2 == 0) return false;
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
        *out = pos + 1 + n1 + n2;
        return true;
    }
    return false;
}

static bool is_newline(uint8_t b) { return b == '\r' || b == '\n'; }

static size_t match_llama3(const text_view *t, size_t pos, size_t end) {
    size_t out;
    if (is_contraction_llama3(t, pos, end, &out)) return out;
    char_class c;
    size_t n = char_at(t, pos, NULL, &c);
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (c == CLS_LETTER) return run_end(t, pos, end, CLS_LETTER);
    if (c != CLS_NUMBER && !is_newline(t->s[pos]) && pos + n < end &&
        class_at(t, pos + n) == CLS_LETTER)
        return run_end(t, pos + n, end, CLS_LETTER);
    /* \p{N}{1,3} */
    if (c == CLS_NUMBER) {
        size_t p = pos + n;
        for (int i = 1; i < 3 && p < end; i++) {
            char_class c2;
            size_t n2 = char_at(t, p, NULL, &c2);
            if (c2 != CLS_NUMBER) break;
            p += n2;
        }
        return p;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    size_t q = (t->s[pos] == ' ' && pos + 1 < end) ? pos + 1 : pos;
    if (class_at(t, q) == CLS_OTHER) {
        size_t p = run_end(t, q, end, CLS_OTHER);
        while (p < end && is_newline(t->s[p]))
            p++;
        return p;
    }
    /* \s*[\r\n]+ : up to and including the last newline of the whitespace run */
    size_t p = pos, after_newline = 0;
    while (p < end) {
        char_class c2;
        size_t n2 = char_at(t, p, NULL, &c2);
        if (c2 != CLS_SPACE) break;
        if (is_newline(t->s[p])) after_newline = p + 1;
        p += n2;
    }
    if (after_newline) return after_newline;
    return match_space_run(t, pos, end);
}

static const struct {
    const char *name;
    pretok_kind kind;
} kind_names[] = {
    {"gpt2", PRETOK_GPT2},        {"smollm", PRETOK_SMOLLM},    {"starcoder", PRETOK_SMOLLM},
    {"refact", PRETOK_SMOLLM},    {"codeshell", PRETOK_SMOLLM}, {"llama3", PRETOK_LLAMA3},
    {"llama-bpe", PRETOK_LLAMA3}, {"llama-v3", PRETOK_LLAMA3},
};

bool pretok_kind_from_name(const char *name, pretok_kind *kind) {
    for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++) {
        if (strcmp(name, kind_names[i].name) == 0) {
            *kind = kind_names[i].kind;
            return true;
        }
    }
    return false;
}

const char *pretok_kind_name(pretok_kind kind) {
    switch (kind) {
    case PRETOK_GPT2: return "gpt2";
    case PRETOK_SMOLLM: return "smollm";
    case PRETOK_LLAMA3: return "llama3";
    }
    return "?";
}

void pretok_iter_init(pretok_iter *it, pretok_kind kind, const char *text, size_t len) {
    it->kind = kind;
    it->text = (const uint8_t *)text;
    it->len = len;
    it->pos = 0;
    it->seg_end = 0;
}

bool pretok_iter_next(pretok_iter *it, size_t *start, size_t *end) {
    if (it->pos >= it->len) return false;
    text_view t = {it->text, it->len};
    size_t pos = it->pos, stop;
    switch (it->kind) {
    case PRETOK_GPT2: stop = match_gpt2(&t, pos, it->len); break;
    case PRETOK_SMOLLM: {
        char_class c;
        size_t n = char_at(&t, pos, NULL, &c);
        if (c == CLS_NUMBER) {
            stop = pos + n;
            break;
        }
        if (it->seg_end <= pos) { /* find where the next digit starts; cached for the stretch */
            size_t p = pos;
            while (p < it->len) {
                char_class c2;
                size_t n2 = char_at(&t, p, NULL, &c2);
                if (c2 == CLS_NUMBER) break;
                p += n2;
            }
            it->seg_end = p;
        }
        stop = match_gpt2(&t, pos, it->seg_end);
        break;
    }
    case PRETOK_LLAMA3: stop = match_llama3(&t, pos, it->len); break;
    default: stop = it->len; break;
    }
    if (stop <= pos) stop = pos + 1; /* cannot happen; keeps the walk finite regardless */
    *start = pos;
    *end = stop;
    it->pos = stop;
    return true;
}
