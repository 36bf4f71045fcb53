/* Debian 12's wine (8.0) lacks bcryptprimitives.dll, where Rust's std (since 1.78) takes its
 * random numbers from (ProcessPrng; Windows 10 and later ship it). tests/mixed-platforms.sh
 * builds this stand-in into the wine prefix only: it fills the buffer from RtlGenRandom
 * (advapi32's SystemFunction036), which wine has. Not part of prima. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
  while (len > 0) {
    ULONG n = len > 0x10000 ? 0x10000 : (ULONG)len;
    if (!SystemFunction036(data, n)) return FALSE;
    data += n;
    len -= n;
  }
  return TRUE;
}
