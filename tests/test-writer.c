/* XML escaping: every special byte, UTF-8 passthrough and refusal, the
 * buffer left untouched on error, and a round trip through expat for
 * random hostile strings. */
#include <expat.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "util/buf.h"
#include "xcm/error.h"
#include "xml/writer.h"

static int esc_text(xcm_buf *b, const char *s) {
  return xcm__xml_escape_text(b, s, strlen(s));
}

static int esc_attr(xcm_buf *b, const char *s) {
  return xcm__xml_escape_attr(b, s, strlen(s));
}

static void check_text(const char *in, const char *want) {
  xcm_buf b;

  xcm__buf_init(&b, NULL);
  CHECK_INT(esc_text(&b, in), 0);
  CHECK_MEM(b.data ? b.data : "", b.len, want, strlen(want));
  xcm__buf_free(&b);
}

static void check_attr(const char *in, const char *want) {
  xcm_buf b;

  xcm__buf_init(&b, NULL);
  CHECK_INT(esc_attr(&b, in), 0);
  CHECK_MEM(b.data ? b.data : "", b.len, want, strlen(want));
  xcm__buf_free(&b);
}

static void test_text_specials(void) {
  check_text("", "");
  check_text("plain", "plain");
  check_text("&", "&amp;");
  check_text("<", "&lt;");
  check_text(">", "&gt;");
  check_text("\r", "&#13;");
  /* Quotes, tab and line feed survive in character data as they are. */
  check_text("\"'\t\n", "\"'\t\n");
  check_text("a&b<c>d", "a&amp;b&lt;c&gt;d");
  check_text("]]>", "]]&gt;");
  check_text("&amp;", "&amp;amp;");
  check_text("<<&&>>", "&lt;&lt;&amp;&amp;&gt;&gt;");
}

static void test_attr_specials(void) {
  check_attr("&", "&amp;");
  check_attr("<", "&lt;");
  check_attr(">", "&gt;");
  check_attr("\"", "&quot;");
  check_attr("'", "&apos;");
  check_attr("\t", "&#9;");
  check_attr("\n", "&#10;");
  check_attr("\r", "&#13;");
  check_attr("a\"b'c", "a&quot;b&apos;c");
  check_attr("\"/><route to=\"x\">",
             "&quot;/&gt;&lt;route to=&quot;x&quot;&gt;");
  check_attr("</route>", "&lt;/route&gt;");
  check_attr("x\r\ny", "x&#13;&#10;y");
}

static void test_non_ascii_passthrough(void) {
  /* 2-, 3- and 4-byte sequences, the extremes of the allowed ranges
   * (U+0080, U+D7FF, U+E000, U+FFFD, U+10000, U+10FFFF) and DEL. */
  static const char *const ok[] = {
      "\xc3\xbcmlaut \xe2\x98\x83 \xf0\x9d\x84\x9e",
      "\xc2\x80",
      "\xed\x9f\xbf",
      "\xee\x80\x80",
      "\xef\xbf\xbd",
      "\xf0\x90\x80\x80",
      "\xf4\x8f\xbf\xbf",
      "\x7f",
  };
  size_t i;

  for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
    check_text(ok[i], ok[i]);
    check_attr(ok[i], ok[i]);
    CHECK(xcm__xml_chars_valid(ok[i], strlen(ok[i])));
  }
  check_attr("\xc3\xbc&\xe2\x98\x83", "\xc3\xbc&amp;\xe2\x98\x83");
}

static void test_refused(void) {
  static const struct {
    const char *s;
    size_t len;
  } bad[] = {
      {"a\0b", 3},             /* NUL */
      {"\x01", 1},             /* C0 controls */
      {"\x08", 1},             /* */
      {"\x0b", 1},             /* vertical tab */
      {"\x0c", 1},             /* form feed */
      {"\x1f", 1},             /* */
      {"\x80", 1},             /* stray continuation */
      {"\xbf", 1},             /* */
      {"\xc0\xaf", 2},         /* overlong '/' */
      {"\xc1\xbc", 2},         /* overlong '<' */
      {"\xe0\x80\xbc", 3},     /* overlong '<', 3 bytes */
      {"\xf0\x80\x80\xbc", 4}, /* overlong '<', 4 bytes */
      {"\xe2\x98", 2},         /* truncated */
      {"\xe2\x28\xa1", 3},     /* bad continuation */
      {"\xed\xa0\x80", 3},     /* surrogate U+D800 */
      {"\xed\xbf\xbf", 3},     /* surrogate U+DFFF */
      {"\xef\xbf\xbe", 3},     /* U+FFFE */
      {"\xef\xbf\xbf", 3},     /* U+FFFF */
      {"\xf4\x90\x80\x80", 4}, /* above U+10FFFF */
      {"\xf5\x80\x80\x80", 4}, /* */
      {"\xff", 1},             /* */
      {"ok\xc3", 3},           /* truncated at the end */
  };
  xcm_buf b;
  size_t i;

  xcm__buf_init(&b, NULL);
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    xcm__buf_reset(&b);
    CHECK_INT(xcm__buf_append_str(&b, "keep"), 0);
    CHECK_INT(xcm__xml_escape_text(&b, bad[i].s, bad[i].len), XCM_EINVAL);
    CHECK_INT(xcm__xml_escape_attr(&b, bad[i].s, bad[i].len), XCM_EINVAL);
    CHECK_MEM(b.data, b.len, "keep", 4);
    CHECK(!xcm__xml_chars_valid(bad[i].s, bad[i].len));
  }
  xcm__buf_free(&b);
}

static void test_attr_helper(void) {
  xcm_buf b;

  xcm__buf_init(&b, NULL);
  CHECK_INT(xcm__buf_append_str(&b, "<a"), 0);
  CHECK_INT(xcm__xml_attr(&b, "id", "x\"y"), 0);
  CHECK_INT(xcm__xml_attr(&b, "to", ""), 0);
  CHECK_MEM(b.data, b.len, "<a id=\"x&quot;y\" to=\"\"", 22);
  /* A refused value leaves nothing of the attribute behind. */
  CHECK_INT(xcm__xml_attr(&b, "from", "bad\x01"), XCM_EINVAL);
  CHECK_MEM(b.data, b.len, "<a id=\"x&quot;y\" to=\"\"", 22);
  xcm__buf_free(&b);
}

/* An allocator that gives out a fixed number of bytes in total. */
typedef struct budget {
  size_t left;
} budget;

static void *budget_realloc(void *ud, void *ptr, size_t size) {
  budget *bu = ud;

  if (size == 0) {
    free(ptr);
    return NULL;
  }
  if (size > bu->left)
    return NULL;
  bu->left -= size;
  return realloc(ptr, size);
}

static void test_enomem_leaves_buffer(void) {
  budget bu = {256};
  xcm_allocator a = {sizeof a, budget_realloc, &bu};
  xcm_buf b;
  char big[300];

  memset(big, '&', sizeof(big));
  xcm__buf_init(&b, &a);
  CHECK_INT(xcm__buf_append_str(&b, "head"), 0);
  CHECK_INT(xcm__xml_escape_text(&b, big, sizeof(big)), XCM_ENOMEM);
  CHECK_INT(xcm__xml_escape_attr(&b, big, sizeof(big)), XCM_ENOMEM);
  CHECK_INT(xcm__xml_attr(&b, "x", "a much longer value that still fits"), 0);
  memset(big, 'a', sizeof(big));
  big[sizeof(big) - 1] = '\0';
  CHECK_INT(xcm__xml_attr(&b, "y", big), XCM_ENOMEM);
  CHECK_MEM(b.data, b.len, "head x=\"a much longer value that still fits\"",
            44);
  xcm__buf_free(&b);
}

static void test_long_runs(void) {
  /* Runs between entities are copied in blocks: check the seams. */
  xcm_buf b, want;
  char in[1000];
  size_t i;

  for (i = 0; i < sizeof(in); i++)
    in[i] = (i % 97 == 0) ? '<' : (char)('a' + i % 26);
  xcm__buf_init(&b, NULL);
  xcm__buf_init(&want, NULL);
  for (i = 0; i < sizeof(in); i++)
    if (in[i] == '<')
      xcm__buf_append_str(&want, "&lt;");
    else
      xcm__buf_append_char(&want, in[i]);
  CHECK_INT(xcm__xml_escape_attr(&b, in, sizeof(in)), 0);
  CHECK_MEM(b.data, b.len, want.data, want.len);
  xcm__buf_free(&b);
  xcm__buf_free(&want);
}

/* Round trip: what expat reads back from the escaped output is the input,
 * whatever mix of markup characters and UTF-8 went in. */
typedef struct rt {
  xcm_buf attr;
  xcm_buf text;
  int elements;
} rt;

static void XMLCALL rt_start(void *ud, const XML_Char *name,
                             const XML_Char **atts) {
  rt *r = ud;

  (void)name;
  r->elements++;
  if (atts[0] != NULL)
    xcm__buf_append_str(&r->attr, atts[1]);
}

static void XMLCALL rt_chars(void *ud, const XML_Char *s, int len) {
  rt *r = ud;

  xcm__buf_append(&r->text, s, (size_t)len);
}

static void test_roundtrip_expat(void) {
  static const char *const pieces[] = {
      "a",
      "&",
      "<",
      ">",
      "\"",
      "'",
      "\t",
      "\n",
      "\r",
      " ",
      "\r\n",
      "]]>",
      ";",
      "#",
      "&#38;",
      "\xc3\xbc",
      "\xe2\x98\x83",
      "\xf0\x9d\x84\x9e",
      "</route>",
      "'/><iq type='set'>",
  };
  int round;

  for (round = 0; round < 500; round++) {
    xcm_buf in, doc;
    rt r;
    XML_Parser p;
    unsigned n = xcm_test_rand() % 12, k;

    xcm__buf_init(&in, NULL);
    xcm__buf_init(&doc, NULL);
    xcm__buf_init(&r.attr, NULL);
    xcm__buf_init(&r.text, NULL);
    r.elements = 0;
    for (k = 0; k < n; k++)
      xcm__buf_append_str(
          &in, pieces[xcm_test_rand() % (sizeof(pieces) / sizeof(pieces[0]))]);
    xcm__buf_append_str(&doc, "<a");
    xcm__buf_append_str(&doc, (round & 1) ? " v='" : " v=\"");
    REQUIRE(xcm__xml_escape_attr(&doc, in.data ? in.data : "", in.len) == 0);
    xcm__buf_append_str(&doc, (round & 1) ? "'>" : "\">");
    REQUIRE(xcm__xml_escape_text(&doc, in.data ? in.data : "", in.len) == 0);
    xcm__buf_append_str(&doc, "</a>");

    p = XML_ParserCreate("UTF-8");
    XML_SetUserData(p, &r);
    XML_SetElementHandler(p, rt_start, NULL);
    XML_SetCharacterDataHandler(p, rt_chars);
    if (!CHECK(XML_Parse(p, doc.data, (int)doc.len, 1) == XML_STATUS_OK))
      xcm_test_note("expat: %s", XML_ErrorString(XML_GetErrorCode(p)));
    XML_ParserFree(p);
    CHECK_INT(r.elements, 1);
    CHECK_MEM(r.attr.data ? r.attr.data : "", r.attr.len,
              in.data ? in.data : "", in.len);
    CHECK_MEM(r.text.data ? r.text.data : "", r.text.len,
              in.data ? in.data : "", in.len);
    xcm__buf_free(&in);
    xcm__buf_free(&doc);
    xcm__buf_free(&r.attr);
    xcm__buf_free(&r.text);
  }
}

static const xcm_test tests[] = {
    {"text_specials", test_text_specials},
    {"attr_specials", test_attr_specials},
    {"non_ascii_passthrough", test_non_ascii_passthrough},
    {"refused", test_refused},
    {"attr_helper", test_attr_helper},
    {"enomem_leaves_buffer", test_enomem_leaves_buffer},
    {"long_runs", test_long_runs},
    {"roundtrip_expat", test_roundtrip_expat},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
